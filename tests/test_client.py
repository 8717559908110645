"""The client API: start, get, list, result, history."""

from __future__ import annotations

import threading
import time

import pytest
from rq import Queue

import durable
from tests import workflows
from tests.conftest import drain


def test_start_is_idempotent_by_id(client):
    first = client.start(workflows.arithmetic, 1, workflow_id="pr-1")
    again = client.start(workflows.arithmetic, 999, workflow_id="pr-1")
    assert first == again
    assert Queue("durable", connection=client.conn).count == 1  # the redelivery enqueued nothing
    with pytest.raises(durable.WorkflowAlreadyExists, match="pr-1"):
        client.start(workflows.arithmetic, 1, workflow_id="pr-1", if_exists="error")
    drain(client, first)
    assert first.result() == 104  # the first arguments won


def test_unpicklable_arguments_raise_and_write_nothing(client):
    with pytest.raises(durable.SerializationError, match="arguments of workflow arithmetic"):
        client.start(workflows.arithmetic, threading.Lock(), workflow_id="bad")
    assert client.conn.keys("*") == []


def test_invalid_id_and_non_workflows_are_refused(client):
    with pytest.raises(ValueError, match="invalid workflow id"):
        client.start(workflows.arithmetic, 1, workflow_id="no spaces")
    with pytest.raises(TypeError, match="decorated with @durable.workflow"):
        client.start(workflows.add, 1)
    assert client.conn.keys("*") == []


def test_local_workflow_cannot_be_started(client):
    @durable.workflow
    def local():
        yield workflows.add(1, 2)

    with pytest.raises(ValueError, match="workers cannot import it"):
        client.start(local)


def test_non_generator_workflow_is_a_type_error_at_decoration():
    with pytest.raises(TypeError, match="needs a generator function"):

        @durable.workflow
        def not_a_generator():
            return 1


def test_get_and_list(client):
    a = client.start(workflows.arithmetic, 1, workflow_id="a")
    b = client.start(workflows.fails, workflow_id="b")
    with pytest.raises(durable.WorkflowNotFound, match="nope"):
        client.get("nope")
    assert client.get("a") == a
    assert [h.id for h in client.list()] == ["a", "b"]
    drain(client, a)
    drain(client, b)
    assert [h.id for h in client.list(status="completed")] == ["a"]
    assert [h.id for h in client.list(status="failed")] == ["b"]
    assert a.describe()["name"] == "arithmetic"


def test_result_times_out_when_nothing_runs(client):
    handle = client.start(workflows.arithmetic, 1)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 0.3"):
        handle.result(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_result_waits_for_a_notice_not_by_polling(client, monkeypatch):
    handle = client.start(workflows.arithmetic, 2, workflow_id="waited")
    reads = []
    real_meta = client.store.meta
    monkeypatch.setattr(client.store, "meta", lambda wid: reads.append(wid) or real_meta(wid))

    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(handle.result(timeout=10)))
    waiter.start()
    time.sleep(0.5)  # the waiter is blocked on the notice meanwhile
    other = durable.Client(client.conn)  # its own store: its reads are not counted
    drain(other, other.get("waited"))
    waiter.join(timeout=10)
    assert outcome == [106]
    assert len(reads) <= 3  # one read before waiting, one after the notice (not one per tick)


def test_history_is_readable(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="h")
    drain(client, handle)
    history = handle.history()
    assert history[0]["type"] == "activity_scheduled" and history[0]["activity"] == "tests.workflows:add"
    assert history[0]["args"] == (1, 1) and history[1]["result"] == 2
    assert [e["index"] for e in history] == list(range(len(history)))
    with pytest.raises(durable.WorkflowNotFound):
        client.get("missing").history()
