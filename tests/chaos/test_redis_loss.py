"""Losing Redis: a worker rides out an outage; a client fails fast with a clear error.

(a) One worker runs a workflow of sequential activities; half-way through,
redis-server is stopped (SIGTERM, so the AOF is flushed), stays down 3 s and
starts again on the same port and directory. The workflow must complete with
the right result, and the worker must be the same, still-running process.

(b) With redis-server down, ``Client(url).get(id)``, ``handle.status()`` and
``durable status ID --url URL`` must fail within seconds with a connection
error (one line on stderr for the command), never hang.

(c) Twenty quick redis-server restarts while one worker runs near-instant steps:
the worker must survive restarts that land between jobs too (RQ's own
heartbeat between jobs was unguarded and ended the worker).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

import durable

from . import flows
from .conftest import REPO_ROOT, ChaosWorkers, RedisServer, make_client, read_executions, tail

pytestmark = pytest.mark.chaos

OUTAGE = 3.0
FAIL_FAST = 6.0  # seconds a call may take to report that Redis is unreachable


def test_worker_rides_out_a_redis_outage(chaos_redis: RedisServer, chaos_workers: ChaosWorkers,
                                          execution_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n, seed = 20, 12345
    worker = chaos_workers.start(name="only")
    client = make_client(chaos_redis.url)
    handle = client.start(flows.sequence, n, seed, 0.1, workflow_id="redis-loss")

    deadline = time.monotonic() + 30
    while len(read_executions(execution_log)) < 6:
        assert time.monotonic() < deadline, "the workflow made no progress before the outage"
        assert worker.popen.poll() is None, "the worker died before the outage"
        time.sleep(0.02)
    before = len(read_executions(execution_log))
    chaos_redis.stop()  # SIGTERM: redis-server flushes the AOF and exits
    stopped_at = time.time()
    time.sleep(OUTAGE)
    assert worker.popen.poll() is None, f"the worker exited during the outage (code {worker.popen.returncode})"
    chaos_redis.start()
    back_at = time.time()

    assert handle.result(timeout=60) == flows.expected_sequence(n, seed)
    assert worker.popen.poll() is None, f"the worker exited after the outage (code {worker.popen.returncode})"
    assert chaos_workers.alive() == [worker] and len(chaos_workers.procs) == 1, "the worker was replaced"

    executions = read_executions(execution_log)
    assert {pid for _, _, pid, _ in executions} == {worker.pid}
    per_seq = Counter(seq for _, seq, _, _ in executions)
    assert sorted(per_seq) == list(range(n)), f"activities that ran: {sorted(per_seq)}"
    history = handle.history()
    completed = Counter(e["seq"] for e in history if e["type"] == "activity_completed")
    assert sorted(completed) == list(range(n)) and set(completed.values()) == {1}, completed
    assert [e["seq"] for e in history if e["type"] == "activity_scheduled"] == list(range(n))
    resumed = min((when for _, _, _, when in executions if when >= back_at), default=None)
    with capsys.disabled():
        print(f"\nredis outage: {before} of {n} activities done when redis-server stopped; down "
              f"{back_at - stopped_at:.1f} s; first activity after it came back started "
              f"{(resumed - back_at) if resumed else float('nan'):.2f} s later; "
              f"{len(executions) - n} extra executions; worker pid {worker.pid} unchanged")


def test_client_fails_fast_without_redis(chaos_redis: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = chaos_redis.url
    client = durable.Client(url)  # the ordinary client, as an application makes it
    handle = client.start(flows.sequence, 1, 1, 0.0, workflow_id="offline")  # no worker: it stays running
    assert handle.status() == "running"
    chaos_redis.stop()

    timings = {}

    def timed(what: str, call) -> None:
        began = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            call()
        timings[what] = time.monotonic() - began

    timed("Client(url).get(id)", lambda: durable.Client(url).get("offline"))
    timed("client.get(id), pooled connection", lambda: client.get("offline"))
    timed("handle.status()", handle.status)

    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "durable", "status", "offline", "--url", url], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    timings["durable status ID --url URL"] = time.monotonic() - began
    with capsys.disabled():
        print("\nwith Redis down: " + "; ".join(f"{what} failed in {secs:.2f} s" for what, secs in timings.items()))
        print(f"  durable status -> exit {proc.returncode}, stderr: {proc.stderr.strip()!r}")

    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis" in lines[0], proc.stderr
    slow = {what: round(secs, 2) for what, secs in timings.items() if secs >= FAIL_FAST}
    assert not slow, f"took {FAIL_FAST} s or more to report that Redis is unreachable: {slow}"


def test_worker_survives_redis_restarts_between_jobs(chaos_redis: RedisServer, chaos_workers: ChaosWorkers,
                                                     execution_log: Path) -> None:
    """Restart redis-server twenty times while one worker runs many near-instant steps, so that
    some restarts land between jobs (in RQ's bookkeeping) rather than inside one."""
    worker = chaos_workers.start(name="only")
    client = make_client(chaos_redis.url)
    n = 200
    handles = [client.start(flows.sequence, n, seed, 0.0, workflow_id=f"restarts-{seed}") for seed in range(4)]
    deadline = time.monotonic() + 30
    while len(read_executions(execution_log)) < 10:
        assert time.monotonic() < deadline, "no progress before the restarts"
        time.sleep(0.02)
    rng = random.Random(2024)
    restarts = 0
    for _ in range(20):
        time.sleep(rng.uniform(0.1, 0.5))
        chaos_redis.restart(hard=True, down=0.2)
        restarts += 1
        if worker.popen.poll() is not None:
            break
    time.sleep(1.0)
    assert worker.popen.poll() is None, (
        f"the worker exited (status {worker.popen.returncode}) after redis restart {restarts}:\n"
        + "\n".join(line for line in tail(worker.log, 400).splitlines()
                    if "quitting" in line or "cannot reach Redis" in line or line.startswith("redis.exceptions")
                    or "rq/worker/base.py" in line)
    )
    for seed, handle in enumerate(handles):
        assert handle.result(timeout=60) == flows.expected_sequence(n, seed)
