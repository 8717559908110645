"""durable.Worker's recovery: expired leases and jobs stranded between dequeue and start."""

from __future__ import annotations

import time

from rq import Queue

import durable
from tests import workflows
from tests.conftest import drain


def test_expired_lease_is_redispatched_once(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="lost")
    queue = Queue("durable", connection=client.conn)
    job = queue.jobs[0]
    queue.remove(job)  # as if a worker took it, leased it, and died
    client.store.hold_leases([job.id], ttl=0.01)
    time.sleep(0.05)
    a = durable.Worker(["durable"], connection=client.conn, lease_ttl=1)
    b = durable.Worker(["durable"], connection=client.conn, lease_ttl=1)
    assert a.recover() + b.recover() == 1
    assert queue.count == 1
    assert drain(client, handle) == "completed"


def test_job_stranded_between_dequeue_and_start_is_redispatched(client):
    handle = client.start(workflows.arithmetic, 1, workflow_id="stranded")
    queue = Queue("durable", connection=client.conn)
    client.conn.lmove(queue.key, queue.intermediate_queue_key)  # RQ's dequeue; the worker died right after
    assert queue.count == 0
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=0.2)
    assert worker.recover() == 0  # first sight: it may be a live worker about to start it
    time.sleep(0.25)
    other = durable.Worker(["durable"], connection=client.conn, lease_ttl=0.2)
    assert other.recover() == 0  # another worker's first sight
    assert worker.recover() == 1
    assert other.recover() == 0  # claimed once
    assert queue.count == 1
    assert drain(client, handle) == "completed" and handle.result() == 104


def _comparable(history):
    keep = ("type", "seq", "activity", "args", "result", "attempt")
    return [{k: e[k] for k in keep if k in e} for e in history]


def test_concurrent_steps_of_one_workflow_write_one_history(client):
    """16 threads advance the same workflow at once, over and over (what duplicate RQ jobs
    do); the history equals a single runner's."""
    import threading

    from durable.runtime import Step

    single = client.start(workflows.inline_chain, 6, workflow_id="single")
    drain(client, single)

    handle = client.start(workflows.inline_chain, 6, workflow_id="raced")
    run_id = client.store.meta("raced").run_id
    barrier = threading.Barrier(16)
    errors = []

    def racer():
        try:
            barrier.wait()
            for _ in range(20):
                Step(client.store, "raced", run_id).run()
                Step(client.store, "raced", run_id, activity=(6, 2)).run()  # the retry job, duplicated
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drain(client, handle)
    assert not errors
    assert handle.result() == single.result()
    assert _comparable(handle.history()) == _comparable(single.history())
