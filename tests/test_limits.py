"""``durable.Limit``: the settings, the Lua that takes a slot and a start together (on
fakeredis, with the caller's clock), and steps that put an attempt off without using
it up (in the testing kit, whose virtual clock makes the spacing exact).

Real worker processes on a real Redis: tests/integration/test_limits_real.py.
"""

from __future__ import annotations

import pytest

import durable
from durable.registry import limit_of
from durable.routing import held_limits, worker_state
from durable.store import Store
from durable.testing import WorkflowEnvironment

from . import limit_flows as flows


# -- the settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "limits nothing"),
    ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
    ({"concurrency": 1.5}, "concurrency must be a whole number"),
    ({"concurrency": True}, "concurrency must be a whole number"),
    ({"rate": 0}, "rate must be a positive number"),
    ({"rate": float("inf")}, "rate must be a positive number"),
    ({"rate": 1, "per": 0}, "per must be a positive number"),
    ({"rate": "1"}, "rate must be a positive number"),
])
def test_a_limit_says_what_is_wrong_with_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        durable.Limit("x", **kwargs)


def test_a_limit_name_must_be_usable_as_a_key():
    for bad in ("", "a}b", "has space", 3):
        with pytest.raises(ValueError, match="invalid limit name"):
            durable.Limit(bad, rate=1)


def test_a_limit_takes_its_settings_by_keyword_and_spaces_starts_per_over_rate():
    with pytest.raises(TypeError):
        durable.Limit("x", 1)  # type: ignore[misc]
    assert durable.Limit("x", rate=2).interval == 0.5
    assert durable.Limit("x", rate=10, per=60).interval == 6.0
    assert durable.Limit("x", concurrency=3).interval == 0.0


def test_activities_share_a_limit_by_name_and_one_name_has_one_setting():
    assert flows.post.limit is flows.SLACK and flows.post_inline.limit is flows.SLACK
    assert limit_of(flows.post.path) is flows.SLACK
    assert limit_of(flows.on_slack_queue.path) is None  # no limit
    assert limit_of("no_such_module_xyz:f") is None  # code missing here: the attempt says so itself
    same = durable.Limit("test-slack", concurrency=1, rate=2)  # equal settings: the same limit
    durable.activity(limit=same)(lambda: None)
    with pytest.raises(ValueError, match="two limits are named 'test-slack' with different settings"):
        durable.activity(limit=durable.Limit("test-slack", concurrency=5))
    with pytest.raises(TypeError, match="takes a durable.Limit"):
        durable.activity(limit="slack")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flows.post.options(limit=flows.PAIR)  # type: ignore[call-arg]  # a limit is not a per-call option


def test_a_fake_put_in_by_the_testing_kit_keeps_the_limit():
    with WorkflowEnvironment() as env:
        env.replace(flows.post, lambda i, log, seconds=0.1: i)
        assert limit_of(flows.post.path) is flows.SLACK


# -- the script: a slot and a start, together or neither ---------------------------------------------
@pytest.fixture
def store(fake_conn):
    return Store(fake_conn)


def take(store, holder, now, *, concurrency=0, interval=0.0, ttl=10.0, name="l"):
    return store.take_limit(name, holder, now=now, expiry=now + ttl, concurrency=concurrency, interval=interval)


def test_concurrency_counts_holders_and_a_release_frees_a_slot(store):
    assert take(store, "a", 100.0, concurrency=2) == (None, 0.0)
    assert take(store, "b", 100.0, concurrency=2) == (None, 0.0)
    assert take(store, "c", 100.0, concurrency=2) == ("concurrency", 0.0)
    assert set(store.limit_state("l")[0]) == {"a", "b"}
    store.release_limit("l", "a")
    store.release_limit("l", "a")  # twice is harmless
    assert take(store, "c", 100.1, concurrency=2) == (None, 0.0)
    assert set(store.limit_state("l")[0]) == {"b", "c"}


def test_a_holder_that_stops_renewing_frees_its_slot_at_expiry(store):
    assert take(store, "dead", 100.0, concurrency=1, ttl=2.0) == (None, 0.0)
    assert take(store, "x", 101.9, concurrency=1) == ("concurrency", 0.0)
    store.renew_limits([("l", "dead")], 2.0)  # renewed from the real clock: far beyond 102
    assert take(store, "x", 103.0, concurrency=1) == ("concurrency", 0.0)
    store.release_limit("l", "dead")
    store.renew_limits([("l", "dead")], 2.0)  # a renewal after the release brings nothing back
    assert store.limit_state("l")[0] == {}
    assert take(store, "y", 103.0, concurrency=1, ttl=2.0) == (None, 0.0)
    assert take(store, "z", 105.0, concurrency=1) == (None, 0.0)  # y lapsed at 105: dropped, z gets in
    assert set(store.limit_state("l")[0]) == {"z"}


def test_a_rate_spaces_starts_by_its_interval(store):
    starts = []
    now = 100.0
    while len(starts) < 5:
        refused, at = take(store, f"h{now}", now, interval=0.5)
        if refused is None:
            starts.append(now)
        else:
            assert refused == "rate" and at == pytest.approx(starts[-1] + 0.5)
        now = round(now + 0.1, 6)
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [0.5] * 4
    assert store.limit_state("l") == ({}, pytest.approx(102.5))  # a rate alone holds no slot


def test_a_refused_start_takes_no_slot_and_a_full_limit_takes_no_start(store):
    assert take(store, "a", 100.0, concurrency=2, interval=1.0) == (None, 0.0)
    assert take(store, "b", 100.2, concurrency=2, interval=1.0) == ("rate", 101.0)
    assert set(store.limit_state("l")[0]) == {"a"}  # b holds nothing
    assert take(store, "b", 101.0, concurrency=2, interval=1.0) == (None, 0.0)
    assert take(store, "c", 102.0, concurrency=2, interval=1.0) == ("concurrency", 0.0)
    assert store.limit_state("l")[1] == pytest.approx(102.0)  # the refused c moved no start
    store.release_limit("l", "a")
    assert take(store, "c", 102.0, concurrency=2, interval=1.0) == (None, 0.0)


def test_limits_are_independent_by_name_and_hash_tagged(store):
    assert take(store, "a", 100.0, concurrency=1, name="one") == (None, 0.0)
    assert take(store, "a", 100.0, concurrency=1, name="two") == (None, 0.0)
    assert store.limit_keys("slack") == ["durable:limit:{slack}:slots", "durable:limit:{slack}:next"]


# -- steps: put off, not used up ------------------------------------------------------------------------
def runs(env_log):
    return flows.intervals(str(env_log))


def test_a_rate_limited_activity_starts_half_a_second_apart_without_using_attempts(tmp_path):
    log = tmp_path / "calls.log"
    with WorkflowEnvironment() as env:
        handles = [env.start(flows.notify, i, str(log), 0.0, workflow_id=f"n{i}") for i in range(5)]
        assert [env.run(h) for h in handles] == [0, 2, 4, 6, 8]
        for handle in handles:  # nothing in history says it waited: no retry, one attempt
            assert [e["type"] for e in env.history(handle)] == [
                "activity_scheduled", "activity_completed", "workflow_completed"]
            assert env.history(handle)[1]["attempt"] == 1
            assert handle.describe()["held"] is None
        starts = [start for start, *_ in runs(log)]
        assert len(starts) == 5
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert min(gaps) >= 0.5 - 1e-6, gaps
        assert max(gaps) <= 0.5 + 0.1 + 1e-6, gaps  # the next start, plus at most the spread of the put-off
        assert env.conn.zcard(env.client.store.limit_keys("test-slack")[0]) == 0  # every slot given back


def test_an_inline_activity_put_off_by_its_limit_runs_later_as_a_job_of_its_own(tmp_path):
    log = tmp_path / "calls.log"
    with WorkflowEnvironment() as env:
        handles = [env.start(flows.notify_inline, i, str(log), workflow_id=f"i{i}") for i in range(3)]
        assert [env.run(h) for h in handles] == [300, 306, 312]
        starts = [start for start, *_ in runs(log)]
        assert len(starts) == 6
        assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.5 - 1e-6
        for handle in handles:
            history = env.history(handle)
            assert [e.get("attempt") for e in history if e["type"] == "activity_completed"] == [1, 1]
            assert not [e for e in history if e["type"] == "activity_retrying"]


def test_an_attempt_waits_for_a_slot_held_elsewhere_until_it_lapses(tmp_path):
    log = tmp_path / "calls.log"
    with WorkflowEnvironment() as env:
        store = env.client.store
        now = env.now.timestamp()
        for holder in ("elsewhere-1", "elsewhere-2"):  # both slots, taken by a worker that died
            assert take(store, holder, now, concurrency=2, ttl=5.0, name="test-pair") == (None, 0.0)
        handle = env.start(flows.hold, 7, str(log), 0.0)
        env.advance(4.5)
        assert not log.exists()  # put off, again and again, not run
        assert handle.status() == "running" and handle.describe()["held"] is None
        assert env.run(handle) == 7
        (start, _end, _pid, _wf, attempt), = runs(log)
        assert now + 5.0 <= start <= now + 5.0 + 1.0  # within the busy pause after the slots lapsed
        assert attempt == 1


def test_a_slot_is_listed_for_the_keeper_while_its_attempt_runs_and_lasts_a_lease(tmp_path):
    seen = []
    with WorkflowEnvironment() as env:  # its worker's lease: 60 s
        slots_key = env.client.store.limit_keys("test-pair")[0]

        def peek(i, log, seconds):
            seen.append((held_limits(), worker_state["lease_ttl"], env.conn.zrange(slots_key, 0, -1, withscores=True)))
            return i

        env.replace(flows.held_long, peek)
        handle = env.start(flows.hold, 1, str(tmp_path / "x.log"), 0.0)
        now = env.now.timestamp()
        assert env.run(handle) == 1
        (listed, ttl, stored), = seen
        assert [name for name, _holder in listed] == ["test-pair"] and ttl == 60
        assert listed[0][1].startswith(f"{handle.id}#0#1#")  # workflow, seq, attempt, this execution
        assert stored == [(listed[0][1].encode(), pytest.approx(now + 60))]  # the keeper renews it by as much
        assert held_limits() == []
        assert env.conn.zcard(slots_key) == 0  # given back after the attempt


def test_a_retry_passes_through_the_limit_and_waiting_is_not_an_attempt(tmp_path):
    log = tmp_path / "calls.log"
    with WorkflowEnvironment() as env:
        handle = env.start(flows.pace_flaky, str(log))
        assert env.run(handle) == "ok on attempt 2"
        (a, *_, first), (b, *_, second) = runs(log)
        assert (first, second) == (1, 2)
        assert b - a >= 5.0 - 1e-6  # the retry was due at once (no backoff), the rate made it wait 5 s
        assert [(e["type"], e.get("attempt")) for e in env.history(handle)][1:] == [
            ("activity_retrying", 1), ("activity_completed", 2), ("workflow_completed", None)]
