"""The full vocabulary end to end on fakeredis with RQ's worker loop in process."""

from __future__ import annotations

import time

import pytest

import durable
from durable.store import Dispatch
from tests import workflows
from tests.conftest import drain


def run_worker_once(client):
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    worker.work(burst=True)
    worker.store.promote_due(["durable"])


def types(handle):
    return [e["type"] for e in handle.history()]


def test_signals_race_a_timer(client):
    handle = client.start(workflows.pr_monitor, 42, 0.3, workflow_id="pr-42")
    run_worker_once(client)
    for _ in range(200):  # let a couple of reminders go out (timers fire on whole seconds)
        run_worker_once(client)
        if types(handle).count("activity_completed") >= 2:
            break
        time.sleep(0.05)
    assert handle.status().custom["reminders"] >= 2
    handle.signal("closed", "merged")
    assert drain(client, handle) == "completed"
    assert handle.result().startswith("#42 merged after ")


def test_signals_are_buffered_in_order_and_delivered_once(client):
    handle = client.start(workflows.collect_signals, 3, workflow_id="buf")
    for item in ("a", "b"):
        handle.signal("item", item)  # before the workflow ever ran
    run_worker_once(client)
    handle.signal("item", "c")
    handle.signal("item", "d")  # one more than it will take
    assert drain(client, handle) == "completed"
    assert handle.result() == ["a", "b", "c"]


def test_signal_to_unknown_or_finished_workflow_is_a_clear_error(client):
    with pytest.raises(durable.WorkflowNotFound, match="no workflow with id 'nope'"):
        client.signal("nope", "x")
    handle = client.start(workflows.arithmetic, 1, workflow_id="ended")
    drain(client, handle)
    with pytest.raises(durable.WorkflowNotFound, match="has already completed"):
        handle.signal("x", 1)
    with pytest.raises(durable.SerializationError):
        client.start(workflows.waits_forever, workflow_id="w").signal("never", __import__("threading").Lock())


def test_fan_out_results_in_argument_order(client):
    handle = client.start(workflows.fan_out, 20, workflow_id="fan")
    assert drain(client, handle) == "completed"
    assert handle.result() == [2 * i for i in range(20)]
    assert types(handle).count("activity_scheduled") == 20


def test_any_of_first_wins_and_losers_change_nothing(client):
    handle = client.start(workflows.race_timer, 0.2, workflow_id="race")
    for _ in range(100):
        run_worker_once(client)
        if "activity_completed" in types(handle):
            break
        time.sleep(0.05)
    handle.signal("go", "late")  # after the timer won the first race
    assert drain(client, handle) == "completed"
    assert handle.result() == ((1, None), (0, 2), "late")


def test_child_workflows(client):
    handle = client.start(workflows.parent_of_children, 1, workflow_id="parent")
    assert drain(client, handle, timeout=30) == "completed"
    assert handle.result() == (1001, 1002, 1003, "ValueError")
    children = handle.describe()["children"]
    assert children == ["explicit-1", "parent/0", "parent/1", "parent/3"]
    assert client.get("parent/0").describe()["parent"] == "parent"
    assert client.get("parent/3").status() == "failed"


def test_cancel_reaches_the_pending_yield_and_running_children(client):
    handle = client.start(workflows.parent_waiting_on_child, workflow_id="p")
    drain_until = 0
    while "child_started" not in types(handle) and drain_until < 20:
        run_worker_once(client)
        drain_until += 1
    run_worker_once(client)
    child = client.get("p/0")
    assert child.status() == "running"
    assert handle.cancel() is True
    assert handle.cancel() is False  # asked already
    assert drain(client, handle) == "cancelled"
    drain(client, child)
    assert child.status() == "cancelled"
    with pytest.raises(durable.Cancelled):
        handle.result()


def test_cancel_with_compensation_completes(client):
    handle = client.start(workflows.compensates, workflow_id="comp")
    run_worker_once(client)
    handle.cancel()
    assert drain(client, handle) == "completed"
    assert handle.result() == "compensated -1"
    assert "cancel_requested" in types(handle)


def test_continue_as_new_loops_in_bounded_history(client):
    handle = client.start(workflows.counter, 0, 25, workflow_id="loop")
    assert drain(client, handle, timeout=60) == "completed"
    assert handle.result() == 25  # result() followed the runs to the last one
    assert len(handle.history()) == 3  # only the last run's history is live
    assert len(handle.describe()["archived_runs"]) == 1  # DURABLE_KEEP_RUNS default: keep one
    assert len(client.conn.keys("durable:{loop}:history*")) == 2


def test_continue_as_new_can_keep_no_history(client, monkeypatch):
    monkeypatch.setenv("DURABLE_KEEP_RUNS", "0")
    handle = client.start(workflows.counter, 0, 3, workflow_id="loop0")
    drain(client, handle)
    assert handle.describe()["archived_runs"] == []
    assert client.conn.keys("durable:{loop0}:history:*") == []


def test_recorded_values_survive_replay(client):
    handle = client.start(workflows.recorded_values, workflow_id="vals")
    run_worker_once(client)
    recorded = [e["value"] for e in handle.history() if e["type"] == "value_recorded"]
    run_id = client.store.meta("vals").run_id
    client.store.enqueue([Dispatch("durable.runtime.advance", ("vals", run_id), "durable")] * 2)
    run_worker_once(client)  # replays twice: nothing new is recorded
    assert [e["value"] for e in handle.history() if e["type"] == "value_recorded"] == recorded
    handle.signal("go")
    drain(client, handle)
    assert list(handle.result()) == recorded
    when, ident, roll, _ = recorded
    assert when.tzinfo is not None and ident.version == 4 and 0 <= roll < 1


def test_patched_keeps_old_runs_on_the_old_path(client):
    workflows.PATCHED["on"] = False
    old = client.start(workflows.versioned, workflow_id="old-run")
    run_worker_once(client)
    workflows.PATCHED["on"] = True  # deploy the new code
    try:
        new = client.start(workflows.versioned, workflow_id="new-run")
        run_worker_once(client)
        for handle in (old, new):
            handle.signal("go")
            assert drain(client, handle) == "completed", handle.describe()
        assert old.result() == 2 and new.result() == 42
        assert "marker_recorded" in types(new) and "marker_recorded" not in types(old)
    finally:
        workflows.PATCHED["on"] = False
