"""The store: key layout, compare-and-append, atomic dispatch, leases."""

from __future__ import annotations

import threading
import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from durable.errors import SerializationError
from durable.events import ActivityCompleted, ActivityScheduled
from durable.store import Dispatch, Store, validate_workflow_id


@pytest.fixture
def store(fake_conn):
    return Store(fake_conn)


def test_keys_share_a_hash_tag_per_workflow(store):
    keys = [store.meta_key("pr-42"), store.history_key("pr-42"), store.done_channel("pr-42")]
    assert all("{pr-42}" in key for key in keys)


@pytest.mark.parametrize("bad", ["", "has space", "{tag}", "-leading", "x" * 201, None, 42, "a\nb"])
def test_invalid_workflow_ids_are_refused_with_advice(bad):
    with pytest.raises(ValueError, match="invalid workflow id"):
        validate_workflow_id(bad)


@pytest.mark.parametrize("good", ["pr-42", "github.com/acme/repo:42", "a", "user@example.com", "x" * 200])
def test_valid_workflow_ids(good):
    assert validate_workflow_id(good) == good


def test_commit_appends_only_at_the_expected_length(store, fake_conn):
    e0 = ActivityScheduled(seq=0, activity="m:f")
    job = Dispatch("durable.runtime.advance", ("w", "r"), "durable")
    assert store.commit("w", 0, [e0], dispatch=[job])
    assert Queue("durable", connection=fake_conn).count == 1
    # A writer that replayed the old history (length 0) loses and writes nothing:
    assert not store.commit("w", 0, [ActivityCompleted(seq=0, result=1)], dispatch=[job], meta={"status": "x"})
    assert [type(e) for e in store.history("w")] == [ActivityScheduled]
    assert Queue("durable", connection=fake_conn).count == 1
    assert fake_conn.hget(store.meta_key("w"), "status") is None
    assert store.commit("w", 1, [ActivityCompleted(seq=0, result=1)])
    assert len(store.history("w")) == 2


def test_racing_committers_one_wins(store):
    results = []
    barrier = threading.Barrier(8)

    def race(i):
        barrier.wait()
        results.append(store.commit("race", 0, [ActivityCompleted(seq=0, result=i)]))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and len(store.history("race")) == 1


def test_unencodable_event_writes_nothing(store, fake_conn):
    bad = ActivityCompleted(seq=0, result=threading.Lock())
    with pytest.raises(SerializationError, match="activity_completed event at sequence 0"):
        store.commit("w", 0, [ActivityScheduled(seq=0), bad], dispatch=[Dispatch("x.y", (), "durable")])
    assert fake_conn.keys("*") == []


def test_future_dispatch_is_scheduled_at_its_exact_time_never_early(store, fake_conn):
    at = time.time() + 100.25
    assert store.commit("w", 0, [], dispatch=[Dispatch("durable.runtime.fire_timer", ("w", "r", 0), "durable", at=at)])
    queue = Queue("durable", connection=fake_conn)
    assert queue.count == 0
    registry = ScheduledJobRegistry(queue=queue)
    (job_id,) = registry.get_job_ids()
    # the exact time is the score every durable worker promotes by; RQ's scheduler compares
    # whole seconds with it, so it never fires early either
    assert fake_conn.zscore(registry.key, job_id) == at
    assert store.promote_due(["durable"]) == 0 and queue.count == 0


def test_create_is_once_per_id(store, fake_conn):
    first = Dispatch("durable.runtime.advance", ("w", "r"), "durable")
    assert store.create("w", {"status": "running", "run_id": "r", "created_at": "1.0"}, first)
    assert not store.create("w", {"status": "running", "run_id": "other", "created_at": "2.0"}, first)
    assert store.meta("w").run_id == "r"
    assert Queue("durable", connection=fake_conn).count == 1
    assert store.workflow_ids() == ["w"]


def test_expired_leases_are_claimed_once(store):
    store.hold_leases(["alive"], ttl=60)
    store.hold_leases(["dead1", "dead2"], ttl=0.01)
    time.sleep(0.05)
    assert sorted(store.claim_expired_leases()) == ["dead1", "dead2"]
    assert store.claim_expired_leases() == []
    store.release_lease("alive")
    assert store.conn.zcard(store.leases_key) == 0


def test_promote_due_moves_only_due_jobs(store, fake_conn):
    soon = Dispatch("durable.runtime.advance", ("w", "r"), "durable", at=time.time() + 0.5)
    later = Dispatch("durable.runtime.advance", ("w2", "r"), "durable", at=time.time() + 3600)
    store.enqueue([soon, later])
    queue = Queue("durable", connection=fake_conn)
    assert store.promote_due(["durable"]) == 0 and queue.count == 0
    time.sleep(1.6)  # past the rounded-up second
    assert store.promote_due(["durable"]) == 1
    assert queue.count == 1 and queue.jobs[0].args == ("w", "r")
    assert len(ScheduledJobRegistry(queue=queue).get_job_ids()) == 1


def test_a_commit_for_another_run_writes_nothing_even_at_the_same_length(store, fake_conn):
    # continue_as_new started a new history that reached the length an old-run job replayed
    fake_conn.hset(store.meta_key("w"), "run_id", "new-run")
    fake_conn.rpush(store.history_key("w"), b"x")
    assert not store.commit("w", 1, [ActivityCompleted(seq=0, result=1)], run_id="old-run")
    assert fake_conn.llen(store.history_key("w")) == 1
    assert store.commit("w", 1, [ActivityCompleted(seq=0, result=1)], run_id="new-run")
    assert fake_conn.llen(store.history_key("w")) == 2
