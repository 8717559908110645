"""durable.testing: the in-process kernel with a virtual clock."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from durable import clock
from durable.testing import WorkflowEnvironment
from tests import workflows


def test_a_thirty_day_sleep_takes_no_real_time():
    started = time.monotonic()
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.month_long, 30)
        assert env.run(handle) == (30, 3)
        fired = [e for e in env.history(handle) if e["type"] == "timer_fired"]
        assert len(fired) == 1
    assert time.monotonic() - started < 1.0


def test_activities_can_be_replaced_by_fakes():
    calls = []
    with WorkflowEnvironment() as env:
        env.replace(workflows.add, lambda a, b: calls.append((a, b)) or -1)
        handle = env.start(workflows.arithmetic, 5)
        assert env.run(handle) == -1  # add faked, double real: add -> -1, double -> -2, add -> -1
        assert calls == [(5, 1), (-2, 100)]
    assert workflows.add.func(1, 1) == 2  # the fake is gone after the environment


def test_signals_injected_at_a_virtual_time_race_timers():
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.pr_monitor, 7, timedelta(days=1).total_seconds())
        env.signal(handle, "closed", "merged", after=timedelta(days=3, hours=12))
        assert env.run(handle) == "#7 merged after 3 reminders"
        assert handle.status().custom == {"reminders": 3}
        assert env.now.timestamp() >= time.time() + timedelta(days=3).total_seconds()


def test_retry_backoff_is_skipped_too():
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.slow_retry)
        assert env.run(handle) == "x"
        retry = next(e for e in env.history(handle) if e["type"] == "activity_retrying")
        assert retry["retry_at"] - retry["time"] == pytest.approx(30.0)


def test_advance_moves_the_clock_step_by_step():
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.sleeper, 3600)
        env.advance(timedelta(minutes=59))
        assert handle.status() == "running"
        env.advance(timedelta(minutes=2))
        assert handle.status() == "completed" and handle.result() == 1


def test_a_workflow_nothing_can_wake_is_reported():
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.waits_forever)
        with pytest.raises(RuntimeError, match="nothing is scheduled to wake it"):
            env.run(handle)


def test_the_real_clock_is_restored():
    with WorkflowEnvironment(start=0):
        assert clock.now() < 10
    assert abs(clock.now() - time.time()) < 1


def test_a_timer_that_lost_a_race_fires_without_a_trace():
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.loser_timer)
        assert env.run(handle) == (0, 2)
        fired = [e["seq"] for e in env.history(handle) if e["type"] == "timer_fired"]
        assert fired == [2]  # the 120 s sleep; the 60 s timer (seq 1) lost to the activity


def test_an_endless_daily_loop_runs_in_bounded_history_and_keys():
    """A year of daily reminders: a new run every week keeps history and keys flat."""
    with WorkflowEnvironment() as env:
        handle = env.start(workflows.daily_reminder, 0, 365, workflow_id="daily")
        samples = []
        for _ in range(52):
            env.advance(timedelta(days=7))
            samples.append((len(env.conn.keys("durable:*")), len(env.history(handle))))
        assert env.run(handle) == 365
        keys, lengths = zip(*samples, strict=True)
        assert max(lengths) <= 2 * 7 * 2 + 2  # one week of sleeps and posts, never more
        assert max(keys[1:]) == min(keys[1:])  # after the first run archives, no key accumulates
        assert len(handle.describe()["archived_runs"]) == 1


def test_an_activity_no_worker_can_import_is_held_then_runs_once_deployed():
    from durable.registry import override

    with WorkflowEnvironment() as env:
        handle = env.start(workflows.calls_missing_activity)
        env.advance(timedelta(minutes=2))  # four tries, 30 s apart
        info = handle.describe()
        assert info["status"] == "running"
        assert "not_deployed_yet:handler cannot be imported" in info["held"]
        assert [e["type"] for e in env.history(handle)] == ["activity_scheduled"]  # no attempt was used up
        override("not_deployed_yet:handler", lambda x: x + 41)  # the code is deployed
        try:
            assert env.run(handle) == 42
            assert handle.describe()["held"] is None
            assert env.history(handle)[1]["attempt"] == 1
        finally:
            override("not_deployed_yet:handler", None)
