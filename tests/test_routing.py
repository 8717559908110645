"""Wake-ups follow the generator: each worker's own queue, and what happens when it dies."""

from __future__ import annotations

import time

from rq import Queue
from rq.registry import ScheduledJobRegistry

import durable
from tests import workflows
from tests.test_cache import run_next_job


def test_a_sequential_run_sticks_to_the_worker_that_keeps_its_generator(client):
    a = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    b = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    for worker in (a, b):
        client.store.mark_alive(worker.own_queue, 30)
    handles = [client.start(workflows.long_chain, 8, 0.0, workflow_id=f"w{i}") for i in range(4)]
    for _ in range(100):  # both workers take turns, each from its own queue first
        if run_next_job(a, client) is None and run_next_job(b, client) is None:
            break
    assert [h.result(timeout=1) for h in handles] == [sum(range(8))] * 4
    hits, misses = a.cache.hits + b.cache.hits, a.cache.misses + b.cache.misses
    assert misses == 4 and hits == 4 * 9  # one cold replay per workflow, every later step warm


def test_signals_wake_the_owner_when_it_is_alive(client):
    a = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    client.store.mark_alive(a.own_queue, 30)
    handle = client.start(workflows.collect_signals, 1, workflow_id="sig")
    run_next_job(a, client)
    assert client.store.meta("sig").owner == a.own_queue
    handle.signal("item", "x")
    assert Queue(a.own_queue, connection=client.conn).count == 1
    client.store.mark_gone(a.own_queue)
    handle.signal("item", "y")  # its owner is gone now: this wake-up goes to the shared queue
    assert Queue("durable", connection=client.conn).count == 1


def test_a_fan_out_is_not_pinned(client):
    a = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    client.start(workflows.fan_out, 3, workflow_id="fan")
    run_next_job(a, client)
    assert Queue("durable", connection=client.conn).count == 3
    assert Queue(a.own_queue, connection=client.conn).count == 0


def test_a_dead_workers_queue_and_timers_go_home(client):
    a = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    client.store.mark_alive(a.own_queue, 0.2)
    handle = client.start(workflows.sleeper, 1.0, workflow_id="orphan")
    run_next_job(a, client)  # advance: schedules add(0, 0) on a's own queue
    own = Queue(a.own_queue, connection=client.conn)
    assert own.count == 1
    time.sleep(0.3)  # a stops marking itself alive: it died
    b = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    client.store.mark_alive(b.own_queue, 30)
    assert b.store.rehome_dead() == 1
    assert own.count == 0 and Queue("durable", connection=client.conn).count == 1
    assert b.store.rehome_dead() == 0  # claimed once
    run_next_job(b, client)  # add, then the timer lands in b's own registry
    client.store.mark_gone(b.own_queue)  # b dies too, with the timer pending
    assert b.store.rehome_dead() == 1
    assert len(ScheduledJobRegistry(queue=Queue("durable", connection=client.conn)).get_job_ids()) == 1
    deadline = time.monotonic() + 10
    c = durable.Worker(["durable"], connection=client.conn, cache_size=0)
    while handle.status() == "running" and time.monotonic() < deadline:
        c.store.promote_due(["durable"])
        run_next_job(c, client)
        time.sleep(0.05)
    assert handle.result(timeout=1) == 1


def test_workers_publish_their_cache_counters(client):
    handle = client.start(workflows.long_chain, 5, 0.0)
    worker = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    worker.work(burst=True)  # a clean exit publishes them one last time
    assert handle.result(timeout=1) == sum(range(5))
    [stats] = client.store.worker_stats()
    assert stats["name"] == worker.name
    assert int(stats["jobs"]) == 7, stats  # the start, then one per activity (six)
    assert int(stats["cache_misses"]) == 1 and int(stats["cache_hits"]) == worker.cache.hits >= 5
    assert client.conn.pttl(client.store.worker_stats_key(worker.name)) > 0  # it goes away with the worker


def test_a_worker_of_a_named_queue_does_not_take_over_the_workflows_other_jobs(client):
    """A `slack` worker runs the workflow's step when its slack activity ends, but the next
    activity and the wake-ups stay with the workers of the workflow's queue."""
    from tests import limit_flows

    default = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    slack = durable.Worker(["slack"], connection=client.conn, cache_size=10)
    for worker in (default, slack):
        client.store.mark_alive(worker.own_queue, 30)
    handle = client.start(limit_flows.queues_used, workflow_id="q")
    run_next_job(default, client)  # advance: the first activity follows the run to default's own queue
    run_next_job(default, client)  # it runs there, and the step puts the slack activity on `slack`
    assert Queue("slack", connection=client.conn).count == 1
    run_next_job(slack, client)  # the slack activity, then the step that schedules the last activity
    assert Queue(slack.own_queue, connection=client.conn).count == 0
    assert client.store.meta("q").owner == default.own_queue  # wake-ups do not go to the slack worker
    assert Queue("durable", connection=client.conn).count == 1
    while run_next_job(default, client) is not None:
        pass
    before, on_slack, after = handle.result(timeout=1)
    assert before == on_slack == after  # one process here; the queues above are what was checked
