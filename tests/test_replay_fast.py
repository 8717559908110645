"""The engine's fast path for runs of completed activities (``Replayer._fast_forward``).

Each case leaves that path at a different point (a mismatch, a failure, an
exception, a return, a timer, a cancel) and checks the general walk still
decides exactly what it would have.
"""

from __future__ import annotations

import pytest

import durable
from durable.events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityScheduled,
    CancelRequested,
    ErrorInfo,
    TimerStarted,
)
from durable.replay import Replayer


@durable.activity
def step(i):
    return i


@durable.activity
def other(i):
    return i


def completed(n, act=step):
    events = []
    for i in range(n):
        events += [ActivityScheduled(seq=i, activity=act.path, args=(i,)), ActivityCompleted(seq=i, result=i * 10)]
    return events


def run(func, events, *args):
    replayer = Replayer(func, args, workflow_id="wf", run_id="r")
    replayer.feed(events)
    return replayer.step()


def test_results_flow_in_order_and_the_next_command_is_scheduled():
    seen = []

    def flow():
        for i in range(6):
            seen.append((yield step(i)))

    decision = run(flow, completed(5))
    assert seen == [0, 10, 20, 30, 40]
    assert decision.kind == "schedule" and decision.new[0][0] == 5


def test_a_changed_activity_in_the_middle_names_its_sequence():
    def flow():
        for i in range(5):
            yield (other if i == 3 else step)(i)

    with pytest.raises(durable.NonDeterminismError, match="sequence 3"):
        run(flow, completed(5))


def test_a_recorded_failure_is_thrown_at_the_yield_after_a_run_of_successes():
    def flow():
        for i in range(3):
            yield step(i)
        try:
            yield step(3)
        except durable.ActivityFailed as exc:
            return f"caught {exc}"

    events = completed(3) + [ActivityScheduled(seq=3, activity=step.path, args=(3,)),
                             ActivityFailedEvent(seq=3, error=ErrorInfo("ValueError", "boom", "").to_dict())]
    decision = run(flow, events)
    assert decision.kind == "complete" and "boom" in decision.result


def test_the_workflows_own_error_and_its_return_end_the_run():
    def failing():
        yield step(0)
        yield step(1)
        raise KeyError("missing")

    def returning():
        total = 0
        for i in range(4):
            total += yield step(i)
        return total

    failed = run(failing, completed(2))
    assert failed.kind == "fail" and failed.error.type.endswith("KeyError")
    assert run(returning, completed(4)).result == 60


def test_a_timer_after_activities_is_matched_by_the_general_walk():
    def flow():
        yield step(0)
        yield step(1)
        yield durable.sleep(5)
        yield step(3)

    events = completed(2) + [TimerStarted(seq=2, fire_at=100.0)]
    decision = run(flow, events)
    assert decision.kind == "wait" and decision.waiting == (2,)


def test_a_cancel_request_wins_over_later_results():
    def flow():
        try:
            for i in range(5):
                yield step(i)
        except durable.Cancelled:
            return "compensated"

    # the cancel is recorded while activity 2 runs, before its result: it wins
    events = completed(3)
    events.insert(5, CancelRequested())
    decision = run(flow, events)
    assert decision.kind == "complete" and decision.result == "compensated"


def test_is_replaying_is_true_until_the_last_recorded_command():
    flags = []

    def flow():
        for i in range(4):
            yield step(i)
            flags.append(durable.workflow_info().is_replaying)

    # activities 0..2 recorded and answered; 3 is recorded later than every answer before it
    decision = run(flow, completed(3))
    assert decision.kind == "schedule"
    assert flags == [True, True, False]


def test_a_failure_names_its_activity():
    def flow():
        yield step(0)
        try:
            yield step(1)
        except durable.ActivityFailed as exc:
            return str(exc)

    events = completed(1) + [ActivityScheduled(seq=1, activity=step.path, args=(1,)),
                             ActivityFailedEvent(seq=1, error=ErrorInfo("ValueError", "boom", "").to_dict())]
    decision = run(flow, events)
    assert decision.result.startswith(f"activity {step.path} failed"), decision.result


def test_a_mismatched_timer_reads_naturally():
    def flow():
        yield step(0)

    with pytest.raises(durable.NonDeterminismError, match="history recorded timer but the code now yields"):
        run(flow, [TimerStarted(seq=0, fire_at=1.0)])
