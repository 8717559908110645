"""Sticky generators: a worker keeps suspended runs and applies only new events."""

from __future__ import annotations

from rq import Queue

import durable
from durable.cache import CachedRun, GeneratorCache
from durable.replay import Replayer
from tests import workflows


def run_next_job(worker: durable.Worker, client: durable.Client, source: durable.Worker | None = None) -> str | None:
    """Run on ``worker`` the next job ``source`` (default: the same worker) would take:
    its own queue first, then the shared one."""
    found = Queue.dequeue_any((source or worker).queues, None, connection=client.conn)
    if found is None:
        return None
    job, q = found
    worker.execute_job(job, q)
    return job.func_name


def loads_from(client, monkeypatch):
    """The history positions the steps load from (0: a cold load), as they happen."""
    starts = []
    real = durable.store.Store.load_run

    def spy(self, workflow_id, known, tip, **kwargs):
        starts.append(known)
        return real(self, workflow_id, known, tip, **kwargs)

    monkeypatch.setattr(durable.store.Store, "load_run", spy)
    return starts


def test_a_worker_applies_only_new_events_to_its_cached_run(client, monkeypatch):
    worker = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    handle = client.start(workflows.long_chain, 12, 0.0, workflow_id="warm")
    starts = loads_from(client, monkeypatch)
    while run_next_job(worker, client):
        pass
    assert handle.result(timeout=1) == sum(range(12))
    # the first step read the whole (empty) history; every later one is the job of an
    # activity this worker dispatched on a run it holds, and reads nothing at all
    assert starts == [0]
    assert worker.cache.hits == 13 and worker.cache.misses == 1
    assert len(worker.cache) == 0  # a finished run is not kept


def test_a_stale_entry_catches_up_on_what_others_recorded(client):
    a = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    b = durable.Worker(["durable"], connection=client.conn, cache_size=0)
    handle = client.start(workflows.long_chain, 6, 0.0, workflow_id="shared")
    turn = [a, b, b, a, b, a, a, b, a]
    for worker in turn * 2:  # b takes jobs routed to a, as if a had been busy elsewhere
        if run_next_job(worker, client, source=a) is None:
            break
    assert handle.result(timeout=1) == sum(range(6))
    assert a.cache.hits >= 2  # a came back to its run after b had moved it on


def test_a_lost_commit_race_drops_the_entry(client, monkeypatch):
    worker = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    handle = client.start(workflows.long_chain, 4, 0.0, workflow_id="race")
    run_next_job(worker, client)
    assert len(worker.cache) == 1
    real = durable.store.Store.commit
    calls = {"n": 0}

    def lose_once(self, *args, **kwargs):
        calls["n"] += 1
        return False if calls["n"] == 1 else real(self, *args, **kwargs)

    monkeypatch.setattr(durable.store.Store, "commit", lose_once)
    run_next_job(worker, client)  # loses its first commit: replays cold, then wins
    assert worker.cache.misses == 2
    while run_next_job(worker, client):
        pass
    assert handle.result(timeout=1) == sum(range(4))


def test_lru_eviction_and_size_zero():
    cache = GeneratorCache(2)
    for name in "abc":
        cache.put(name, CachedRun("r", Replayer(workflows.arithmetic.func, (1,)), 0))
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.take("a", "r") is None and cache.take("c", "other-run") is None
    assert cache.take("b", "r") is not None
    off = GeneratorCache(0)
    off.put("a", CachedRun("r", Replayer(workflows.arithmetic.func, (1,)), 0))
    assert len(off) == 0


def test_a_signal_that_came_meanwhile_makes_the_optimistic_commit_fail_and_replay(client, monkeypatch):
    worker = durable.Worker(["durable"], connection=client.conn, cache_size=10)
    handle = client.start(workflows.add_then_signal, workflow_id="opt")
    assert run_next_job(worker, client) == "durable.runtime.advance"  # cold; dispatches add(1, 2) here
    handle.signal("go", 10)  # history moves on while the activity job waits
    starts = loads_from(client, monkeypatch)
    assert run_next_job(worker, client) == "durable.runtime.run_activity"
    # it ran the activity without loading, lost the compare to the signal, then loaded and
    # replayed (reusing the outcome) and went on: the signal was consumed in the same job
    assert starts == [0] and worker.cache.misses == 2
    while run_next_job(worker, client):
        pass
    assert handle.result(timeout=1) == 13
    assert [c for c in workflows.CALLS if c[0] == "add"] == [("add", (1, 2)), ("add", (3, 10))]
