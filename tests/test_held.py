"""Held workflows: code that cannot replay (or load) holds a workflow without losing
what the job that found out brought, and a worker that starts with code that
works advances it again.

Before this, holding wrote nothing: an activity's result or a due timer that
arrived while the code was broken was lost, and no job was left to continue
the workflow after a fix.
"""

from __future__ import annotations

import durable
from durable import clock
from durable.store import Dispatch

from . import workflows


def run_worker_once(client):
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)


def types(handle):
    return [(e["type"], e["seq"]) for e in handle.history()]


def test_an_activity_result_that_finds_the_code_broken_is_recorded_and_used_after_the_fix(client):
    workflows.MODE["activity"] = "add"
    handle = client.start(workflows.shape_then_work, workflow_id="held-activity")
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5, cache_size=0).work(burst=True, max_jobs=2)
    assert ("activity_scheduled", 1) in types(handle) and ("activity_completed", 1) not in types(handle)
    workflows.MODE["activity"] = "double"  # a bad deploy: the job of add(20, 22) replays other code
    try:
        run_worker_once(client)
        info = handle.describe()
        assert info["status"] == "running" and "sequence 0" in info["held"]
        completed = [e for e in handle.history() if e["type"] == "activity_completed" and e["seq"] == 1]
        assert [e["result"] for e in completed] == [42]  # recorded although held
        assert client.conn.sismember(client.store.held_key, "held-activity")
    finally:
        workflows.MODE["activity"] = "add"  # the fix is deployed
    run_worker_once(client)  # a worker that starts advances held workflows again
    assert handle.result(timeout=1) == 42
    assert handle.describe()["held"] is None and not client.conn.sismember(client.store.held_key, "held-activity")
    assert [c for c in workflows.CALLS if c == ("add", (20, 22))] == [("add", (20, 22))]  # ran once


def test_a_timer_that_fires_while_the_code_is_broken_is_recorded(client, monkeypatch):
    workflows.MODE["activity"] = "add"
    handle = client.start(workflows.changes_shape, workflow_id="held-timer")
    run_worker_once(client)
    started = next(e for e in handle.history() if e["type"] == "timer_started")
    workflows.MODE["activity"] = "double"
    try:
        monkeypatch.setattr(clock, "now", lambda: started["fire_at"] + 1)
        meta = client.store.meta("held-timer")
        client.store.enqueue([Dispatch("durable.runtime.fire_timer", ("held-timer", meta.run_id, started["seq"]),
                                       "durable")])
        run_worker_once(client)
        assert handle.describe()["held"] and ("timer_fired", started["seq"]) in types(handle)
    finally:
        workflows.MODE["activity"] = "add"
    run_worker_once(client)
    assert handle.result(timeout=1) == "done"


def test_a_workflow_held_for_missing_code_continues_once_a_worker_has_it(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="held-code")
    client.store.set_fields("held-code", {"path": "no_such_module_xyz:flow"})
    run_worker_once(client)
    assert "cannot load workflow code" in handle.describe()["held"]
    client.store.set_fields("held-code", {"path": workflows.arithmetic.path})  # the module is deployed
    for _ in range(5):
        run_worker_once(client)
        if handle.status() == "completed":
            break
    assert handle.result(timeout=1) == 104
