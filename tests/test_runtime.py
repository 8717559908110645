"""The RQ runtime end to end on fakeredis, with RQ's own SimpleWorker loop in process."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

import durable
from durable.store import Dispatch
from tests import workflows
from tests.conftest import drain


def events(handle):
    return [(e["type"], e["seq"]) for e in handle.history()]


def run_worker_once(client):
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)


def test_queued_and_inline_activities(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="arith")
    assert drain(client, handle) == "completed"
    assert handle.result() == 104
    assert events(handle) == [
        ("activity_scheduled", 0), ("activity_completed", 0),
        ("activity_scheduled", 1), ("activity_completed", 1),  # inline: recorded together, same step
        ("activity_scheduled", 2), ("activity_completed", 2),
        ("workflow_completed", -1),
    ]
    assert [name for name, _ in workflows.CALLS] == ["add", "double", "add"]


def test_queued_activity_job_records_result_and_continues_in_the_same_job(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="hop")
    worker = durable.Worker(["durable"], connection=client.conn)
    jobs_seen = []
    while handle.status() == "running":
        job = Queue.dequeue_any(worker.queues, None, connection=client.conn)
        assert job is not None, "workflow stalled with no job queued"
        job_obj, queue = job
        jobs_seen.append((job_obj.func_name, queue.name == "durable"))
        worker.execute_job(job_obj, queue)
    # advance, then one job per queued activity (each continues the workflow itself); the
    # activities follow the generator to the worker's own queue:
    assert jobs_seen == [("durable.runtime.advance", True), ("durable.runtime.run_activity", False),
                         ("durable.runtime.run_activity", False)]


def test_many_inline_steps_commit_each_result(client):
    handle = client.start(workflows.inline_chain, 5, workflow_id="inline")
    assert drain(client, handle) == "completed"
    assert handle.result() == (52, "r-2")
    types = [t for t, _ in events(handle)]
    assert types.count("activity_completed") == 6 and types.count("activity_retrying") == 1


def test_retries_with_backoff_then_success(client):
    handle = client.start(workflows.with_retry, "k", workflow_id="retry")
    assert drain(client, handle) == "completed"
    assert handle.result() == "k-ok-3"
    history = handle.history()
    retries = [e for e in history if e["type"] == "activity_retrying"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["error"]["type"] == "ConnectionError"


def test_retry_wait_is_scheduled_in_redis_not_slept(client):
    handle = client.start(workflows.slow_retry, workflow_id="slow-retry")
    started = time.monotonic()
    run_worker_once(client)
    assert time.monotonic() - started < 5  # nothing slept 30 s
    retry = [e for e in handle.history() if e["type"] == "activity_retrying"]
    assert len(retry) == 1 and retry[0]["retry_at"] - retry[0]["time"] == pytest.approx(30.0, abs=0.01)
    registry = ScheduledJobRegistry(queue=Queue("durable", connection=client.conn))
    (job_id,) = registry.get_job_ids()
    assert client.conn.zscore(registry.key, job_id) >= retry[0]["retry_at"]  # never before the backoff
    assert handle.status() == "running"


def test_last_failure_raises_activity_failed_in_the_workflow(client):
    handle = client.start(workflows.catches_failure, workflow_id="catch")
    assert drain(client, handle) == "completed"
    assert handle.result() == "caught ValueError: boom; then 2"
    assert [v for n, v in workflows.CALLS if n == "always_fails"] == ["boom", "boom"]  # max_attempts=2


def test_uncaught_exception_fails_workflow_with_type_message_traceback(client):
    handle = client.start(workflows.fails, workflow_id="fails")
    assert drain(client, handle) == "failed"
    with pytest.raises(durable.WorkflowFailed) as info:
        handle.result()
    assert info.value.error_type == "KeyError" and "missing thing" in info.value.message
    assert 'raise KeyError("missing thing")' in info.value.traceback
    assert "durable/replay.py" not in info.value.traceback  # starts at the user's frame
    assert "Original traceback" in str(info.value)
    assert events(handle)[-1] == ("workflow_failed", -1)


def test_activity_timeout_counts_as_failed_attempt(client):
    handle = client.start(workflows.times_out, workflow_id="timeout")
    started = time.monotonic()
    assert drain(client, handle) == "completed"
    assert handle.result() == "durable.errors.ActivityTimeout"
    assert time.monotonic() - started < 4  # two attempts of 0.2 s, not 2 x 5 s


def test_async_activity(client):
    handle = client.start(workflows.uses_async, 21, workflow_id="async")
    drain(client, handle)
    assert handle.result() == 42


def test_unpicklable_workflow_result_fails_with_serialization_error(client):
    handle = client.start(workflows.not_a_result, workflow_id="unpicklable")
    assert drain(client, handle) == "failed"
    with pytest.raises(durable.WorkflowFailed) as info:
        handle.result()
    assert info.value.error_type == "durable.errors.SerializationError"


def test_activity_info_idempotency_key_is_stable_across_retries(client):
    handle = client.start(workflows.identity, workflow_id="me")
    drain(client, handle)
    first, (wid, seq, attempt, key) = handle.result()
    assert (first, wid, seq, attempt) == (0, "me", 1, 2)
    keys = {k for name, (k, _) in workflows.CALLS if name == "who_am_i"}
    assert keys == {key} and key.startswith("me:")


def test_sleep_never_fires_early(client):
    handle = client.start(workflows.sleeper, 1.2, workflow_id="sleep")
    assert drain(client, handle) == "completed"
    history = handle.history()
    started = next(e for e in history if e["type"] == "timer_started")
    fired = next(e for e in history if e["type"] == "timer_fired")
    assert fired["time"] >= started["fire_at"]
    assert started["fire_at"] - started["time"] == pytest.approx(1.2, abs=0.01)


def test_timer_job_run_early_reschedules_instead_of_firing(client):
    handle = client.start(workflows.sleeper, 3600, workflow_id="early")
    run_worker_once(client)
    meta = client.store.meta("early")
    started = next(e for e in handle.history() if e["type"] == "timer_started")
    client.store.enqueue([Dispatch("durable.runtime.fire_timer", ("early", meta.run_id, started["seq"]), "durable")])
    run_worker_once(client)
    assert "timer_fired" not in [e["type"] for e in handle.history()]
    registry = ScheduledJobRegistry(queue=Queue("durable", connection=client.conn))
    assert len(registry.get_job_ids()) == 2  # the original and the re-scheduled one, both at the deadline
    # the exact deadline is the score every worker promotes by (RQ's own API shows whole seconds)
    assert all(client.conn.zscore(registry.key, j) >= started["fire_at"] for j in registry.get_job_ids())


def test_duplicate_jobs_record_each_completion_once(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="dup")
    run_id = client.store.meta("dup").run_id
    # Flood the queue with duplicates of every job this workflow will ever need.
    dupes = [Dispatch("durable.runtime.advance", ("dup", run_id), "durable") for _ in range(3)]
    dupes += [Dispatch("durable.runtime.run_activity", ("dup", run_id, seq, 1), "durable")
              for seq in (0, 2) for _ in range(3)]
    client.store.enqueue(dupes)
    assert drain(client, handle) == "completed"
    assert handle.result() == 104
    completions = [seq for t, seq in events(handle) if t == "activity_completed"]
    assert completions == [0, 1, 2]


def test_nondeterministic_code_holds_the_workflow(client):
    workflows.MODE["activity"] = "add"
    handle = client.start(workflows.changes_shape, workflow_id="shape")
    run_worker_once(client)
    assert ("timer_started", 1) in events(handle)
    workflows.MODE["activity"] = "double"
    try:
        meta = client.store.meta("shape")
        client.store.enqueue([Dispatch("durable.runtime.advance", ("shape", meta.run_id), "durable")])
        before = handle.history()
        run_worker_once(client)
    finally:
        workflows.MODE["activity"] = "add"
    info = handle.describe()
    assert info["status"] == "running" and "sequence 0" in info["held"]
    assert handle.history() == before  # nothing written


def test_missing_workflow_code_holds_the_workflow(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="gone")
    client.store.set_fields("gone", {"path": "no_such_module_xyz:flow"})
    run_worker_once(client)
    info = handle.describe()
    assert info["status"] == "running"
    assert "cannot load workflow code" in info["held"] and "no_such_module_xyz" in info["held"]
