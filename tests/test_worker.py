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



def test_the_last_commit_of_a_job_ends_its_lease(client, monkeypatch):
    released = []
    monkeypatch.setattr(durable.store.Store, "release_lease", lambda self, job_id: released.append(job_id))
    handle = client.start(workflows.arithmetic, 1, workflow_id="lease")
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    while (found := Queue.dequeue_any(worker.queues, None, connection=client.conn)) is not None:
        job, q = found
        worker.execute_job(job, q)
        assert client.conn.zcard(client.store.leases_key) == 0  # gone with the job's last commit
    assert handle.result(timeout=1) == 104
    assert released == []  # no separate round trip was needed
