"""End-to-end: real redis-server, real worker processes, real signals.

Each test is bounded by ``handle.result(timeout=...)`` or explicit deadlines,
and every process it starts is killed by the ``workers`` fixture's teardown.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Worker as RQWorker

import durable
from tests import workflows

from .conftest import Workers, durable_worker_argv, group_members, rq_worker_argv, wait_for

pytestmark = pytest.mark.integration


# -- helpers -----------------------------------------------------------------------------


def call_log(path: Path) -> list[tuple[int, str, str]]:
    """(pid, activity, repr of value) per line of the cross-process call log."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        pid, name, value = line.split(" ", 2)
        rows.append((int(pid), name, value))
    return rows


def event_types(handle: durable.WorkflowHandle) -> list[str]:
    return [entry["type"] for entry in handle.history()]


def assert_history_exactly_once(history: list[dict]) -> None:
    """Every command seq is scheduled once, resolved once, and seqs are 0..N-1 contiguous."""
    scheduled = [e["seq"] for e in history if e["type"] in ("activity_scheduled", "timer_started")]
    assert scheduled == list(range(len(scheduled))), f"command seqs not 0..N contiguous: {scheduled}"
    resolved = Counter(e["seq"] for e in history if e["type"] in ("activity_completed", "activity_failed",
                                                                     "timer_fired"))
    completed = Counter(e["seq"] for e in history if e["type"] == "activity_completed")
    assert all(n == 1 for n in completed.values()), f"a seq completed more than once: {completed}"
    assert all(n == 1 for n in resolved.values()), f"a seq resolved more than once: {resolved}"
    assert sorted(resolved) == scheduled, f"scheduled {scheduled} but resolved {sorted(resolved)}"
    ends = [e for e in history if e["type"] in ("workflow_completed", "workflow_failed")]
    assert len(ends) == 1 and history[-1] is ends[0], "the workflow must end exactly once, last"


def add_args(history: list[dict]) -> list[tuple]:
    return [tuple(e["args"]) for e in history
            if e["type"] == "activity_scheduled" and e["activity"].endswith(":add")]


def long_chain_add_args(n: int) -> list[tuple[int, int]]:
    pairs, total = [], 0
    for i in range(n):
        pairs.append((total, i))
        total += i
    return pairs


# -- a. the sample workflows on two real workers ----------------------------------------------------


def test_workflows_complete_on_two_worker_processes(workers: Workers, client: durable.Client) -> None:
    workers.start_many(2)

    arith = client.start(workflows.arithmetic, 1, workflow_id="arith")
    sleeper = client.start(workflows.sleeper, 1.0, workflow_id="sleeper")
    retry = client.start(workflows.with_retry, "k", workflow_id="retry")
    failing = client.start(workflows.fails, workflow_id="fails")
    caught = client.start(workflows.catches_failure, workflow_id="caught")
    timeout = client.start(workflows.times_out, workflow_id="timeout")

    assert arith.result(timeout=20) == (1 + 1) * 2 + 100
    assert sleeper.result(timeout=20) == 1
    assert retry.result(timeout=20) == "k-ok-3"
    with pytest.raises(durable.WorkflowFailed) as info:
        failing.result(timeout=20)
    assert info.value.error_type == "KeyError"
    assert "missing thing" in info.value.message
    assert "in fails" in info.value.traceback, info.value.traceback
    assert failing.status() == "failed"
    assert caught.result(timeout=20) == "caught ValueError: boom; then 2"
    assert timeout.result(timeout=20) == "durable.errors.ActivityTimeout"

    for handle in (arith, sleeper, retry, failing, caught, timeout):
        assert_history_exactly_once(handle.history())
    retries = [e for e in retry.history() if e["type"] == "activity_retrying"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(w.popen.poll() is None for w in workers.procs), "a worker died:\n" + workers.logs()


# -- b. SIGKILL in the middle of an activity --------------------------------------------------------


N, SLOW_SECONDS = 10, 8.0
SCHEDULER_LOCK = "rq:scheduler-lock:durable"


def _kill_mid_activity(workers: Workers, client: durable.Client, tmp_path: Path, *, n_workers: int,
                       fresh_after_kill: bool) -> None:
    marker, log = tmp_path / "marker", tmp_path / "calls.log"
    workers.env.update(DURABLE_TEST_MARKER=str(marker), DURABLE_TEST_CALL_LOG=str(log))
    workers.start_many(n_workers)
    handle = client.start(workflows.long_chain, N, SLOW_SECONDS, workflow_id="chain")

    wait_for(marker.exists, 20, "the slow activity to start")
    victim_pid = int(marker.read_text())
    # the activity records its call right after the marker: wait for it so the log is complete
    wait_for(lambda: any(r[:2] == (victim_pid, "slow") for r in call_log(log)), 5, "the slow call to be logged")
    victim = workers.by_pid(victim_pid)
    killed_at = time.monotonic()
    workers.kill(victim)
    assert not group_members(victim.pgid)
    if fresh_after_kill:
        workers.start(name="fresh")

    # lease 2 s + a second full run of the slow activity + the rest of the chain
    assert handle.result(timeout=40) == sum(range(N)) == 45
    elapsed = time.monotonic() - killed_at
    assert elapsed >= SLOW_SECONDS - 0.5, f"finished {elapsed:.1f} s after the kill: the slow step was not rerun?"

    rows = call_log(log)
    slow_pids = [pid for pid, name, _ in rows if name == "slow"]
    assert len(slow_pids) == 2, rows
    assert slow_pids[0] == victim_pid and slow_pids[1] != victim_pid, rows
    survivors = {p.pid for p in workers.procs if p is not victim}
    assert slow_pids[1] in survivors, (slow_pids, survivors)
    assert all(pid != victim_pid for pid, _, _ in rows[rows.index((victim_pid, "slow", repr("mid-5"))) + 1:])

    history = handle.history()
    assert_history_exactly_once(history)
    assert add_args(history) == long_chain_add_args(N)
    assert len(add_args(history)) == len(set(add_args(history)))
    slow_events = [e for e in history if e["type"] == "activity_completed" and e["result"] == "slept-mid-5"]
    assert len(slow_events) == 1 and slow_events[0]["attempt"] == 1
    # every add ran exactly once too: only the slow activity was interrupted
    assert Counter(v for _, name, v in rows if name == "add") == Counter(repr(p) for p in long_chain_add_args(N))


def test_sigkill_mid_activity_other_worker_finishes(workers: Workers, client: durable.Client,
                                                    tmp_path: Path) -> None:
    _kill_mid_activity(workers, client, tmp_path, n_workers=2, fresh_after_kill=False)


def test_sigkill_only_worker_mid_activity_fresh_worker_finishes(workers: Workers, client: durable.Client,
                                                                tmp_path: Path) -> None:
    _kill_mid_activity(workers, client, tmp_path, n_workers=1, fresh_after_kill=True)


# -- c. a durable timer outlives every worker -----------------------------------------------------


def _timer_survives(workers: Workers, client: durable.Client, stop: Callable[[Workers], None]) -> None:
    workers.start_many(2)
    handle = client.start(workflows.sleeper, 3.0, workflow_id="timer")
    wait_for(lambda: "timer_started" in event_types(handle), 20, "timer_started in history")
    stop(workers)
    assert not workers.alive()
    time.sleep(4)  # the timer comes due while no worker is running
    assert handle.status() == "running"
    assert "timer_fired" not in event_types(handle)

    workers.start(name="fresh")
    assert handle.result(timeout=30) == 1
    history = handle.history()
    assert_history_exactly_once(history)
    started = next(e for e in history if e["type"] == "timer_started")
    fired = next(e for e in history if e["type"] == "timer_fired")
    assert fired["seq"] == started["seq"]
    assert fired["time"] >= started["fire_at"], (fired, started)
    assert started["fire_at"] == pytest.approx(started["time"] + 3.0, abs=0.01)


def _sigterm_all(workers: Workers) -> None:
    for proc in workers.alive():
        workers.signal(proc, signal.SIGTERM)
    for proc in workers.procs:
        proc.popen.wait(timeout=15)


def test_timer_survives_all_workers_stopped_gracefully(workers: Workers, client: durable.Client) -> None:
    _timer_survives(workers, client, _sigterm_all)


def test_timer_survives_all_workers_sigkilled(workers: Workers, client: durable.Client, conn: redis.Redis) -> None:
    def kill_all(pool: Workers) -> None:
        pool.kill_all()
        # The killed RQ scheduler's lock outlives it (TTL 61 s; RQ retries only every 600 s after):
        # the fresh worker must fire the timer without RQ's scheduler (regression: 273cf22).
        assert conn.get(SCHEDULER_LOCK) is not None

    _timer_survives(workers, client, kill_all)
    assert conn.get(SCHEDULER_LOCK) is not None, "RQ's lock was not held by a dead scheduler during the test"


# -- d. plain `rq worker -w durable.Worker` -------------------------------------------------------------


def test_rq_worker_command_runs_workflows(workers: Workers, client: durable.Client, redis_url: str) -> None:
    workers.start(rq_worker_argv(redis_url), name="rq-worker")
    handle = client.start(workflows.arithmetic, 5, workflow_id="via-rq")
    assert handle.result(timeout=20) == (5 + 1) * 2 + 100
    assert_history_exactly_once(handle.history())
    sleeper = client.start(workflows.sleeper, 1.0, workflow_id="via-rq-timer")  # needs --with-scheduler
    assert sleeper.result(timeout=20) == 1


# -- e. `durable worker -n 2` -------------------------------------------------------------------------


def test_worker_pool_starts_n_processes_and_sigterm_stops_them(workers: Workers, client: durable.Client,
                                                                redis_url: str, conn: redis.Redis) -> None:
    parent = workers.start(durable_worker_argv(redis_url, "-n", "2"), name="pool")
    registered = wait_for(lambda: (ws := RQWorker.all(connection=conn)) and len(ws) >= 2 and ws, 15,
                          "two registered workers")
    time.sleep(1.0)  # no third one shows up late
    registered = RQWorker.all(connection=conn)
    assert len(registered) == 2, [w.name for w in registered]
    child_pids = {w.pid for w in registered}
    assert parent.pid not in child_pids and len(child_pids) == 2
    assert child_pids <= set(group_members(parent.pgid))

    handle = client.start(workflows.arithmetic, 2, workflow_id="via-pool")
    assert handle.result(timeout=20) == (2 + 1) * 2 + 100

    os.kill(parent.pid, signal.SIGTERM)
    assert parent.popen.wait(timeout=20) == 0, workers.logs()
    wait_for(lambda: not group_members(parent.pgid), 10, "every process of the pool to exit")
    for pid in child_pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    wait_for(lambda: not RQWorker.all(connection=conn), 5, "the workers to unregister")
