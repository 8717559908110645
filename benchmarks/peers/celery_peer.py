"""Celery on Redis: a chain of N tasks, one worker process with the solo pool.

The Celery app lives in ``benchmarks.peers.celery_app`` (imported by the worker
subprocess); the broker and result backend URL come from ``$BENCH_CELERY_URL``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..common import require, spawn, stop, version

QUEUE = "bench-celery"


class CeleryPeer:
    """A Celery solo worker subprocess on ``url`` (a Redis database of its own)."""

    def __init__(self, url: str, directory: Path) -> None:
        require("celery", "celery")
        self.url = url
        self.directory = directory
        self.proc: Any = None
        self.app: Any = None
        self.hop: Any = None

    @property
    def label(self) -> str:
        return f"Celery {version('celery')} chain (Redis broker + result backend, solo pool, acks early)"

    def start(self) -> CeleryPeer:
        import os

        os.environ["BENCH_CELERY_URL"] = self.url
        from . import celery_app

        self.app, self.hop = celery_app.app, celery_app.hop
        argv = [sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_app", "worker", "-P", "solo",
                "-c", "1", "-Q", QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "WARNING"]
        self.proc = spawn(argv, self.directory / "celery-worker.log", env={"BENCH_CELERY_URL": self.url})
        self.run(3, timeout=60)  # wait until it answers, and warm it up
        return self

    def run(self, hops: int, timeout: float = 300) -> float:
        """Seconds for a chain of ``hops`` tasks, from ``apply_async`` to the last result."""
        from celery import chain

        assert self.hop is not None
        signature = chain(self.hop.s(0), *[self.hop.s() for _ in range(hops - 1)])
        start = time.perf_counter()
        result = signature.apply_async(queue=QUEUE)
        value = result.get(timeout=timeout)
        elapsed = time.perf_counter() - start
        if value != hops:
            raise RuntimeError(f"celery chain returned {value!r}, expected {hops}")
        return elapsed

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
