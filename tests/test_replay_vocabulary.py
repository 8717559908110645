"""The engine's full vocabulary from synthesized histories: signals, fan-out, children,
cancellation, recorded values, patches, continue-as-new, custom status."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

import durable
from durable.commands import AnyOf, Patched, RecordValue, StartChild, WaitSignal
from durable.events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    ErrorInfo,
    MarkerRecorded,
    SignalReceived,
    SignalWaitStarted,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    WorkflowCompleted,
)
from durable.replay import Replayer


@durable.activity
def act(x):
    return x


@durable.activity
def undo(x):
    return x


@durable.workflow
def child_flow(x):
    value = yield act(x)
    return value


def sched(seq, *args, a=act):
    return ActivityScheduled(seq=seq, activity=a.path, args=args)


def done(seq, result):
    return ActivityCompleted(seq=seq, result=result)


def sig(name, payload):
    return SignalReceived(signal=name, payload=payload)


def wait(seq, name, timeout_at=None):
    return SignalWaitStarted(seq=seq, signal=name, timeout_at=timeout_at)


def replay(wf, history, *args, run_id=""):
    replayer = Replayer(wf.func, args, workflow_id="wf", run_id=run_id, name=wf.name)
    replayer.feed(history)
    return replayer, replayer.step()


def run(wf, history, *args, **kw):
    return replay(wf, history, *args, **kw)[1]


# -- signals -----------------------------------------------------------------------------------

@durable.workflow
def two_signals():
    first = yield durable.wait_signal("go")
    second = yield durable.wait_signal("go")
    return [first, second]


@durable.workflow
def signal_or_timeout():
    value = yield durable.wait_signal("closed", timeout=60)
    return value


def test_wait_signal_is_recorded_then_waits():
    decision = run(two_signals, [])
    assert decision.kind == "schedule"
    (seq, command), = decision.new
    assert seq == 0 and isinstance(command, WaitSignal) and command.signal == "go"
    assert run(two_signals, [wait(0, "go")]).kind == "wait"


def test_signals_sent_early_are_buffered_and_delivered_in_order_once_each():
    history = [sig("go", 1), sig("go", 2), sig("other", "x"), wait(0, "go"), wait(1, "go")]
    decision = run(two_signals, history)
    assert (decision.kind, decision.result) == ("complete", [1, 2])


def test_one_signal_is_delivered_once():
    decision = run(two_signals, [sig("go", 1), wait(0, "go"), wait(1, "go")])
    assert (decision.kind, decision.waiting) == ("wait", (1,))


def test_signal_wait_timeout_returns_none():
    history = [wait(0, "closed", timeout_at=60.0), TimerFired(seq=0), sig("closed", "late")]
    assert run(signal_or_timeout, history).result is None


def test_signal_before_timeout_wins():
    history = [wait(0, "closed", timeout_at=60.0), sig("closed", "merged"), TimerFired(seq=0)]
    assert run(signal_or_timeout, history).result == "merged"


# -- all_of / any_of ---------------------------------------------------------------------------

@durable.workflow
def fan_out(n):
    results = yield durable.all_of(*[act(i) for i in range(n)])
    return results


@durable.workflow
def nested_mixed():
    results = yield durable.all_of(
        act("a"), durable.sleep(5), durable.wait_signal("s"), child_flow(7),
        durable.all_of(act("b"), act("c")),
    )
    return results


@durable.workflow
def race():
    winner = yield durable.any_of(act("slow"), durable.sleep(10))
    after = yield act("after")
    return winner, after


@durable.workflow
def empty_fan_out():
    results = yield durable.all_of()
    return results


def test_all_of_schedules_every_leaf_in_one_decision():
    decision = run(fan_out, [], 3)
    assert [seq for seq, _ in decision.new] == [0, 1, 2]
    assert [c.args for _, c in decision.new] == [(0,), (1,), (2,)]


def test_all_of_results_are_in_argument_order_whatever_the_completion_order():
    history = [sched(0, 0), sched(1, 1), sched(2, 2), done(2, "c"), done(0, "a")]
    assert run(fan_out, history, 3).kind == "wait"
    decision = run(fan_out, history + [done(1, "b")], 3)
    assert decision.result == ["a", "b", "c"]


def test_all_of_raises_the_first_failure_in_history_order():
    failure = ActivityFailedEvent(seq=2, error=ErrorInfo.from_exception(KeyError("two")).to_dict())
    later = ActivityFailedEvent(seq=0, error=ErrorInfo.from_exception(KeyError("zero")).to_dict())
    history = [sched(0, 0), sched(1, 1), sched(2, 2), failure, later]
    decision = run(fan_out, history, 3)
    assert decision.kind == "fail" and "two" in decision.error.message  # seq 1 still pending: no matter


def test_nested_all_of_mixes_activities_timers_signals_and_children():
    decision = run(nested_mixed, [])
    kinds = [(seq, type(c).__name__) for seq, c in decision.new]
    assert kinds == [(0, "ActivityCall"), (1, "StartTimer"), (2, "WaitSignal"), (3, "StartChild"),
                     (4, "ActivityCall"), (5, "ActivityCall")]
    history = [sched(0, "a"), TimerStarted(seq=1, fire_at=5), wait(2, "s"),
               ChildStarted(seq=3, workflow=child_flow.path, workflow_id="wf/3"), sched(4, "b"), sched(5, "c"),
               done(5, "C"), sig("s", "S"), ChildCompleted(seq=3, result=7), TimerFired(seq=1), done(4, "B"),
               done(0, "A")]
    assert run(nested_mixed, history).result == ["A", None, "S", 7, ["B", "C"]]


def test_empty_all_of_returns_an_empty_list():
    assert run(empty_fan_out, []).result == []


def test_any_of_returns_index_and_result_of_the_first_and_losers_change_nothing():
    base = [sched(0, "slow"), TimerStarted(seq=1, fire_at=10)]
    decision = run(race, base + [TimerFired(seq=1)])
    assert decision.kind == "schedule" and decision.new[0][0] == 2
    late = base + [TimerFired(seq=1), sched(2, "after"), done(0, "finally"), done(2, "x")]
    assert run(race, late).result == ((1, None), "x")
    first = base + [done(0, "fast"), TimerFired(seq=1), sched(2, "after"), done(2, "y")]
    assert run(race, first).result == ((0, "fast"), "y")


def test_any_of_needs_a_command():
    with pytest.raises(ValueError, match="at least one"):
        durable.any_of()
    with pytest.raises(TypeError, match="takes activity calls"):
        durable.all_of(durable.now())


# -- children ---------------------------------------------------------------------------------

@durable.workflow
def parent():
    value = yield child_flow(1)
    try:
        yield child_flow.options(workflow_id="fixed-id")(2)
    except durable.WorkflowFailed as exc:
        return value, exc.error_type
    return value, None


def test_child_workflow_result_and_failure():
    decision = run(parent, [], run_id="r1")
    (seq, command), = decision.new
    assert isinstance(command, StartChild) and command.workflow == child_flow.path and command.workflow_id is None
    history = [ChildStarted(seq=0, workflow=child_flow.path, workflow_id="wf/0"),
               ChildCompleted(seq=0, result=10, parent_run="r1")]
    decision = run(parent, history, run_id="r1")
    assert decision.new[0][1].workflow_id == "fixed-id"
    failed = ChildFailed(seq=1, parent_run="r1", workflow_id="fixed-id",
                         error=ErrorInfo.from_exception(ValueError("bad")).to_dict())
    history += [ChildStarted(seq=1, workflow=child_flow.path, workflow_id="fixed-id"), failed]
    assert run(parent, history, run_id="r1").result == (10, "ValueError")


def test_answers_of_children_of_an_earlier_run_are_ignored():
    history = [ChildStarted(seq=0, workflow=child_flow.path), ChildCompleted(seq=0, result=10, parent_run="old")]
    assert run(parent, history, run_id="r2").kind == "wait"


def test_calling_a_workflow_outside_a_workflow_explains_how_to_start_it():
    with pytest.raises(TypeError, match="start it with durable.Client"):
        child_flow(1)


# -- cancellation -----------------------------------------------------------------------------

@durable.workflow
def compensating():
    try:
        yield act("work")
        yield act("more")
    except durable.Cancelled:
        yield undo("work")
        return "compensated"
    return "finished"


@durable.workflow
def plain():
    yield act("work")
    yield act("more")
    return "finished"


def test_cancel_raises_at_the_pending_yield_and_compensation_runs():
    history = [sched(0, "work"), CancelRequested()]
    decision = run(compensating, history)
    assert decision.kind == "schedule" and decision.new[0][1].activity == undo.path and decision.new[0][0] == 1
    history += [sched(1, "work", a=undo), done(1, "undone"), done(0, "late result, ignored")]
    assert run(compensating, history).result == "compensated"


def test_uncaught_cancel_ends_the_run_cancelled():
    decision = run(plain, [sched(0, "work"), CancelRequested()])
    assert decision.kind == "cancelled" and decision.error.type == "durable.errors.Cancelled"


def test_an_answer_earlier_than_the_cancel_is_delivered_first():
    history = [sched(0, "work"), done(0, 1), CancelRequested()]
    decision = run(plain, history)  # seq 0 resolved before the cancel; cancel hits the next yield
    assert decision.kind == "cancelled"
    history = [sched(0, "work"), done(0, 1), CancelRequested()]
    decision = run(compensating, history)
    assert decision.new[0][1].activity == undo.path and decision.new[0][0] == 2  # "more" got seq 1, unrecorded


# -- recorded values, patches, status, continue-as-new -----------------------------------------------

@durable.workflow
def values():
    when = yield durable.now()
    ident = yield durable.uuid4()
    roll = yield durable.random()
    doubled = yield durable.side_effect(lambda: 21 * 2)
    durable.set_status({"step": "values"})
    return when, ident, roll, doubled


def test_values_are_asked_for_then_replayed():
    decision = run(values, [])
    assert isinstance(decision.new[0][1], RecordValue) and decision.new[0][1].what == "now"
    when, ident = datetime(2026, 1, 1), uuid.uuid4()
    history = [ValueRecorded(seq=0, what="now", value=when), ValueRecorded(seq=1, what="uuid4", value=ident),
               ValueRecorded(seq=2, what="random", value=0.25),
               ValueRecorded(seq=3, what="side_effect:values.<locals>.<lambda>", value=42)]
    replayer, decision = replay(values, history)
    assert decision.result == (when, ident, 0.25, 42)
    assert replayer.custom_status == {"step": "values"}


def test_side_effect_failure_is_raised_at_the_yield():
    error = ErrorInfo.from_exception(ZeroDivisionError("boom")).to_dict()
    history = [ValueRecorded(seq=0, what="now", value=datetime(2026, 1, 1)),
               ValueRecorded(seq=1, what="uuid4", value=uuid.uuid4()),
               ValueRecorded(seq=2, what="random", value=0.5),
               ValueRecorded(seq=3, what="side_effect:values.<locals>.<lambda>", error=error)]
    decision = run(values, history)
    assert decision.kind == "fail" and decision.error.type == "ZeroDivisionError"


@durable.workflow
def patched_flow():
    if (yield durable.patched("new-greeting")):
        greeting = yield act("hello v2")
    else:
        greeting = yield act("hello v1")
    yield act("after")
    return greeting


def test_patched_is_true_for_new_runs():
    decision = run(patched_flow, [])
    assert isinstance(decision.new[0][1], Patched) and decision.new[0][0] == 0
    decision = run(patched_flow, [MarkerRecorded(seq=0, change_id="new-greeting")])
    assert decision.new[0][1].args == ("hello v2",) and decision.new[0][0] == 1


def test_patched_is_false_when_replaying_history_recorded_before_the_change():
    old = [sched(0, "hello v1"), done(0, "v1"), sched(1, "after"), done(1, None), WorkflowCompleted(result="v1")]
    assert run(patched_flow, old).result == "v1"  # no NonDeterminismError: the old path was taken
    in_flight = [sched(0, "hello v1"), done(0, "v1")]
    decision = run(patched_flow, in_flight)
    assert decision.new[0][1].args == ("after",) and decision.new[0][0] == 1


@durable.workflow
def looping(n):
    yield act(n)
    if n < 3:
        yield durable.continue_as_new(n + 1)
    return n


def test_continue_as_new_ends_the_run_with_new_arguments():
    decision = run(looping, [sched(0, 1), done(0, 1)], 1)
    assert (decision.kind, decision.args, decision.kwargs) == ("continue", (2,), {})
    assert run(looping, [sched(0, 3), done(0, 3)], 3).result == 3


def test_nondeterminism_inside_a_composite_names_the_leaf():
    with pytest.raises(durable.NonDeterminismError, match="sequence 1: history recorded signal x"):
        run(race, [sched(0, "slow"), wait(1, "x")])


def test_any_of_is_a_composite_command():
    assert isinstance(durable.any_of(act(1)), AnyOf)


def test_a_cancel_recorded_before_continue_as_new_is_not_lost():
    decision = run(looping, [sched(0, 1), done(0, 1), CancelRequested()], 1)
    assert decision.kind == "cancelled"
