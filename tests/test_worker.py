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


def test_a_durable_job_leaves_nothing_of_rq_behind(client):
    """The lean job path: no execution record, no started registry, and the job hash goes
    with the job's last commit, or with its lease when no commit ended it."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    handle = client.start(workflows.arithmetic, 1, workflow_id="lean")
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    ran = []
    while (found := Queue.dequeue_any(worker.queues, None, connection=client.conn)) is not None:
        job, q = found
        worker.execute_job(job, q)
        ran.append(job.id)
        assert not client.conn.exists(Job.key_for(job.id))
        assert StartedJobRegistry(q.name, connection=client.conn).count == 0
    assert handle.result(timeout=1) == 104 and len(ran) >= 2
    assert FailedJobRegistry("durable", connection=client.conn).count == 0
    # a duplicate of a job whose work is recorded commits nothing, and still leaves nothing
    run_id = client.store.meta("lean").run_id
    again = Queue("durable", connection=client.conn).enqueue("durable.runtime.advance", "lean", run_id)
    worker.execute_job(again, Queue("durable", connection=client.conn))
    assert not client.conn.exists(again.key) and client.conn.zcard(client.store.leases_key) == 0


def test_a_durable_job_that_raises_goes_to_rqs_failed_registry(client, monkeypatch):
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    def broken(self):
        raise RuntimeError("a bug in a step")

    monkeypatch.setattr(durable.step.Step, "run", broken)
    handle = client.start(workflows.arithmetic, 1, workflow_id="bug")
    queue = Queue("durable", connection=client.conn)
    job = queue.jobs[0]
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    found = Queue.dequeue_any(worker.queues, None, connection=client.conn)
    assert found is not None and found[0].id == job.id
    worker.execute_job(*found)
    failed = FailedJobRegistry("durable", connection=client.conn)
    assert failed.get_job_ids() == [job.id]
    result = Job.fetch(job.id, connection=client.conn).latest_result()
    assert result is not None and "a bug in a step" in (result.exc_string or "")
    assert client.conn.zcard(client.store.leases_key) == 0  # the lease ended; the record stays for RQ
    assert handle.status() == "running"


def test_rqs_heartbeat_runs_at_most_once_a_second_not_per_job(client, monkeypatch):
    """RQ beats (and checks for `rq suspend`, which beats too) several times per job;
    durable.Worker at most once a second. Its job counters still add up."""
    import rq.worker.base

    beats = []
    real = rq.worker.base.BaseWorker.heartbeat

    def counted(self, *args, **kwargs):
        beats.append(time.monotonic())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rq.worker.base.BaseWorker, "heartbeat", counted)
    handle = client.start(workflows.long_chain, 40, 0.0)
    worker = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    started = time.monotonic()
    worker.work(burst=True)
    took = time.monotonic() - started
    assert handle.result(timeout=1) == sum(range(40))
    jobs = int(client.conn.hget(worker.key, "successful_job_count") or 0)
    assert jobs == 42  # the start, 40 activities, the zero sleep (written by the last beat)
    # RQ's own: 3 per job plus 1 per suspension check, so over 160 here
    assert len(beats) <= 2 * (took + 2) + 2, (len(beats), took)
