"""The full vocabulary against a real redis-server and real worker processes.

The same scenarios as ``tests/test_vocabulary.py`` (fakeredis, in process), but
every step runs in worker subprocesses (at least two per test) that race each
other for jobs, and some tests SIGKILL every worker and deploy new ones half-way.
Each test is bounded by ``handle.result(timeout=...)`` or explicit deadlines, and
every process it starts is killed by the ``workers`` fixture's teardown.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import redis
from rq import Worker as RQWorker

import durable
from tests import workflows
from tests.integration import flows

from .conftest import Proc, Workers, durable_worker_argv, group_members, wait_for

pytestmark = pytest.mark.integration

FLOWS_MODULE = "tests.integration.flows"


# -- helpers -----------------------------------------------------------------------------------


def types(handle: durable.WorkflowHandle) -> list[str]:
    return [entry["type"] for entry in handle.history()]


def recorded_values(handle: durable.WorkflowHandle) -> list[Any]:
    return [e["value"] for e in handle.history() if e["type"] == "value_recorded"]


def scheduled_activities(handle: durable.WorkflowHandle) -> list[str]:
    return [e["activity"].rsplit(":", 1)[-1] for e in handle.history() if e["type"] == "activity_scheduled"]


def start_workers(pool: Workers, count: int, *, env: dict[str, str] | None = None,
                  prefix: str = "worker") -> list[Proc]:
    """``count`` durable workers that import both test workflow modules."""
    argv = durable_worker_argv(pool.url, "--import", FLOWS_MODULE)
    first = len(pool.procs)
    return [pool.start(argv, name=f"{prefix}{first + i}", env=env) for i in range(count)]


def wait_registered(conn: redis.Redis, procs: list[Proc], timeout: float = 20) -> None:
    """Until every one of ``procs`` has registered with RQ (it is then taking jobs)."""
    pids = {p.pid for p in procs}
    wait_for(lambda: pids <= {w.pid for w in RQWorker.all(connection=conn)}, timeout,
             f"workers {sorted(pids)} to register")


def assert_alive(pool: Workers, procs: list[Proc] | None = None) -> None:
    procs = pool.procs if procs is None else procs
    dead = [p.name for p in procs if p.popen.poll() is not None]
    assert not dead, f"workers died: {dead}\n{pool.logs()}"


def child_handle(client: durable.Client, workflow_id: str) -> durable.WorkflowHandle | None:
    try:
        return client.get(workflow_id)
    except durable.WorkflowNotFound:
        return None


# -- 1. signals -----------------------------------------------------------------------------------


def test_signal_ends_a_reminder_loop_racing_a_timer(workers: Workers, client: durable.Client) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.pr_monitor, 7, 1.0, workflow_id="pr-7")
    status = wait_for(lambda: (st := handle.status()).custom and st.custom["reminders"] >= 1 and st, 20,
                      "at least one reminder in the custom status")
    assert status == "running"
    handle.signal("closed", "merged")
    result = handle.result(timeout=20)
    assert result.startswith("#7 merged after "), result
    reminders = int(result.split()[3])
    assert reminders >= status.custom["reminders"] >= 1
    # each reminder: a timed-out wait, then an add(reminders, 0) activity
    assert scheduled_activities(handle) == ["add"] * reminders
    assert types(handle).count("signal_received") == 1
    assert handle.status() == "completed"
    assert_alive(workers)


def test_signals_sent_early_are_buffered_in_order_and_delivered_once(workers: Workers,
                                                                     client: durable.Client) -> None:
    handle = client.start(workflows.collect_signals, 3, workflow_id="buf")
    for item in ("a", "b", "c"):  # right after start, before any worker has run it: all buffered
        handle.signal("item", item)
    procs = start_workers(workers, 2)
    handle.signal("item", "d")  # one more than it will take, racing the workers
    assert handle.result(timeout=20) == ["a", "b", "c"]
    history = handle.history()
    received = [e["payload"] for e in history if e["type"] == "signal_received"]
    assert received == ["a", "b", "c", "d"]  # the 4th was recorded, never taken
    kinds = [e["type"] for e in history]
    assert kinds[:3] == ["signal_received"] * 3, kinds  # they arrived before the first wait
    assert kinds.count("signal_wait_started") == 3
    assert len(procs) == 2
    with pytest.raises(durable.WorkflowNotFound, match="has already completed"):
        handle.signal("item", "e")
    with pytest.raises(durable.WorkflowNotFound):
        client.signal("buf", "item", "f")
    with pytest.raises(durable.WorkflowNotFound):
        client.signal("no-such-workflow", "item", "g")
    assert_alive(workers)


# -- 2. fan-out and any_of -----------------------------------------------------------------------------


FAN_N, FAN_SECONDS, FAN_WORKERS = 100, 0.2, 4


def test_fan_out_runs_activities_in_parallel_across_workers(workers: Workers, client: durable.Client,
                                                             conn: redis.Redis) -> None:
    procs = start_workers(workers, FAN_WORKERS)
    wait_registered(conn, procs)
    started = time.monotonic()
    handle = client.start(flows.parallel_naps, FAN_N, FAN_SECONDS, workflow_id="fan")
    results = handle.result(timeout=60)
    elapsed = time.monotonic() - started

    assert [i for _, i in results] == list(range(FAN_N))  # argument order, not completion order
    per_pid = Counter(pid for pid, _ in results)
    serial = FAN_N * FAN_SECONDS
    print(f"\nfan-out: {FAN_N} x {FAN_SECONDS} s activities on {FAN_WORKERS} workers took {elapsed:.2f} s "
          f"(serial: {serial:.0f} s); per pid: {dict(per_pid)}")
    assert set(per_pid) <= {p.pid for p in procs}, per_pid
    assert len(per_pid) >= 2, f"only {per_pid} did the work"
    assert elapsed < 12, f"{FAN_N} activities took {elapsed:.1f} s; a single worker needs {serial:.0f} s"
    history = handle.history()
    assert sum(e["type"] == "activity_scheduled" for e in history) == FAN_N
    completed = [e["seq"] for e in history if e["type"] == "activity_completed"]
    assert sorted(completed) == list(range(FAN_N)), "each activity must complete exactly once"
    assert_alive(workers)


def test_any_of_timer_wins_and_the_losing_signal_stays_buffered(workers: Workers, client: durable.Client) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.race_timer, 0.5, workflow_id="race")
    # the timer won the first race and the add won the second: now it waits for 'go' alone
    wait_for(lambda: "activity_completed" in types(handle), 20, "the second race to be won by the activity")
    assert "timer_fired" in types(handle)
    handle.signal("go", "late")
    assert handle.result(timeout=20) == ((1, None), (0, 2), "late")
    assert_alive(workers)


# -- 3. child workflows ------------------------------------------------------------------------------------


def test_child_workflows_results_failures_and_ids(workers: Workers, client: durable.Client) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.parent_of_children, 5, workflow_id="parent")
    assert handle.result(timeout=30) == (1005, 1006, 1007, "ValueError")
    assert handle.describe()["children"] == ["explicit-5", "parent/0", "parent/1", "parent/3"]
    for child_id, expected in (("parent/0", 1005), ("parent/1", 1006), ("explicit-5", 1007)):
        child = client.get(child_id)
        assert child.result(timeout=5) == expected
        assert child.describe()["parent"] == "parent"
    failed = client.get("parent/3")
    assert failed.status() == "failed"
    with pytest.raises(durable.WorkflowFailed) as info:
        failed.result(timeout=5)
    assert info.value.error_type == "ValueError"
    assert_alive(workers)


def test_cancelling_a_parent_cancels_its_running_child(workers: Workers, client: durable.Client) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.parent_waiting_on_child, workflow_id="p")
    child = wait_for(lambda: child_handle(client, "p/0"), 20, "the child p/0 to be created")
    assert isinstance(child, durable.WorkflowHandle)
    wait_for(lambda: "signal_wait_started" in types(child), 20, "the child to wait for its signal")
    assert child.status() == "running" and handle.status() == "running"

    assert handle.cancel() is True
    assert handle.cancel() is False  # asked already
    with pytest.raises(durable.Cancelled):
        handle.result(timeout=20)
    with pytest.raises(durable.Cancelled):
        child.result(timeout=20)
    assert handle.status() == "cancelled" and child.status() == "cancelled"
    assert "cancel_requested" in types(child)
    assert_alive(workers)


# -- 4. continue_as_new -------------------------------------------------------------------------------------


def test_continue_as_new_loops_in_bounded_history(workers: Workers, client: durable.Client,
                                                  conn: redis.Redis) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.counter, 0, 30, workflow_id="loop")
    assert handle.result(timeout=90) == 30
    history = handle.history()
    assert len(history) == 3, history  # only the last run's history is live
    assert [e["type"] for e in history] == ["activity_scheduled", "activity_completed", "workflow_completed"]
    assert tuple(history[0]["args"]) == (30, 0)  # the last run is counter(30, 30)
    assert len(handle.describe()["archived_runs"]) == 1  # DURABLE_KEEP_RUNS default: keep one
    assert len(conn.keys("durable:{loop}:history*")) == 2
    assert_alive(workers)


# -- 5. cancellation with compensation ------------------------------------------------------------------------


def test_cancel_runs_compensation_then_completes(workers: Workers, client: durable.Client) -> None:
    start_workers(workers, 2)
    handle = client.start(workflows.compensates, workflow_id="comp")
    wait_for(lambda: "signal_wait_started" in types(handle), 20, "the workflow to wait for its signal")
    assert handle.cancel() is True
    assert handle.result(timeout=20) == "compensated -1"
    assert handle.status() == "completed"
    kinds = types(handle)
    assert "cancel_requested" in kinds and kinds[-1] == "workflow_completed"
    assert scheduled_activities(handle) == ["add"]  # the compensating activity, run by a worker
    assert_alive(workers)


# -- 6. deterministic helpers survive SIGKILL ----------------------------------------------------------------


def test_recorded_values_survive_sigkill_of_every_worker(workers: Workers, client: durable.Client,
                                                         conn: redis.Redis) -> None:
    first = start_workers(workers, 2)
    handle = client.start(workflows.recorded_values, workflow_id="vals")
    wait_for(lambda: len(recorded_values(handle)) == 4, 20, "four value_recorded events")
    before = recorded_values(handle)

    workers.kill_all()
    assert not any(group_members(p.pgid) for p in first)
    fresh = start_workers(workers, 2, prefix="fresh")
    wait_registered(conn, fresh)
    handle.signal("go")
    result = handle.result(timeout=30)

    assert list(result) == before
    assert recorded_values(handle) == before  # replayed, never recomputed
    when, ident, roll, pid = before
    assert when.tzinfo is not None and ident.version == 4 and 0 <= roll < 1
    assert pid in {p.pid for p in first}, (pid, [p.pid for p in first])  # side_effect ran in a killed worker
    assert pid not in {p.pid for p in fresh}
    assert_alive(workers, fresh)


# -- 7. patched: deploy new code, old runs keep the old path ------------------------------------------------------


def test_patched_old_runs_keep_the_old_path_after_a_deploy(workers: Workers, client: durable.Client,
                                                           conn: redis.Redis,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWS_V2", raising=False)
    v1 = start_workers(workers, 2, env={"FLOWS_V2": "0"}, prefix="v1-")
    old = client.start(flows.deployable, 20, workflow_id="old-run")
    wait_for(lambda: "signal_wait_started" in types(old), 20, "the old run to wait for 'go'")
    assert scheduled_activities(old) == ["old_step"]

    workers.kill_all()  # the deploy: every v1 worker is gone
    assert not any(group_members(p.pgid) for p in v1)
    v2 = start_workers(workers, 2, env={"FLOWS_V2": "1"}, prefix="v2-")
    wait_registered(conn, v2)

    new = client.start(flows.deployable, 20, workflow_id="new-run")
    wait_for(lambda: "signal_wait_started" in types(new), 20, "the new run to wait for 'go'")
    old.signal("go", "old-go")
    new.signal("go", "new-go")

    # both finish on v2 code (code_version ran after the deploy), each on its own path
    assert old.result(timeout=20) == ("old:21", "old-go", "v2")
    assert new.result(timeout=20) == ("new:40", "new-go", "v2")
    assert "marker_recorded" in types(new) and "marker_recorded" not in types(old)
    markers = [e for e in new.history() if e["type"] == "marker_recorded"]
    assert len(markers) == 1 and markers[0]["change_id"] == "v2"
    assert scheduled_activities(old) == ["old_step", "code_version"]
    assert scheduled_activities(new) == ["new_step", "code_version"]
    assert old.describe()["held"] is None and new.describe()["held"] is None
    assert_alive(workers, v2)
