"""The history timeline (``durable history``), from synthesized histories: no Redis, no code."""

from __future__ import annotations

from durable import timeline
from durable.events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    Event,
    SignalReceived,
    SignalWaitStarted,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    WorkflowCompleted,
    WorkflowContinued,
    WorkflowFailedEvent,
)

T0 = 1_800_000_000.0


def build(*events: Event) -> list[timeline.Entry]:
    return timeline.build(list(events), started_at=T0, call="flow(1)", name="flow", run_id="run1")


def by_seq(entries: list[timeline.Entry]) -> dict[int, timeline.Entry]:
    return {e.seq: e for e in entries if e.seq >= 0}


def test_one_line_per_command_with_durations_results_and_retries():
    entries = build(
        ActivityScheduled(seq=0, time=T0 + 0.5, activity="app.acts:fetch", args=("https://x",)),
        ActivityRetrying(seq=0, time=T0 + 1, attempt=1, error={"type": "ConnectionError", "message": "down"}),
        ActivityCompleted(seq=0, time=T0 + 3, result={"rows": 3}, attempt=2),
        TimerStarted(seq=1, time=T0 + 3, fire_at=T0 + 63),
        TimerFired(seq=1, time=T0 + 64),
        ValueRecorded(seq=2, time=T0 + 64, what="uuid4", value="abc"),
        WorkflowCompleted(time=T0 + 64, result=3),
    )
    assert [(e.kind, e.seq) for e in entries] == [
        ("started", -1), ("activity", 0), ("timer", 1), ("value", 2), ("completed", -1)]
    fetch, timer, value = by_seq(entries).values()
    assert (fetch.command, fetch.state, fetch.duration, fetch.result, fetch.attempts) == (
        "fetch('https://x')", "ok", 2.5, "{'rows': 3}", 2)
    assert (timer.command, timer.state, timer.duration) == ("sleep 1m00s", "fired", 61.0)
    assert (value.command, value.result, value.duration) == ("uuid4()", "'abc'", 0.0)
    text = "\n".join(timeline.render(entries, origin=T0))
    assert "fetch('https://x')" in text and "2.5s  {'rows': 3} (2 attempts)" in text
    assert "+1m04s" in text and "1m01s  fired" in text
    assert text.splitlines()[0].split() == ["time", "seq", "command", "took", "result"]
    assert text.splitlines()[1].split()[:3] == ["+0ms", "-", "started"]


def test_failures_show_type_message_and_attempts():
    entries = build(
        ActivityScheduled(seq=0, time=T0, activity="app:charge", args=(10,)),
        ActivityRetrying(seq=0, time=T0 + 1, attempt=1, error={"type": "TimeoutError", "message": "slow"}),
        ActivityFailedEvent(seq=0, time=T0 + 4, attempt=2, error={"type": "ValueError", "message": "card declined"}),
        WorkflowFailedEvent(time=T0 + 4, error={"type": "ValueError", "message": "card declined"}),
    )
    charge = entries[1]
    assert (charge.state, charge.error, charge.attempts, charge.duration) == (
        "failed", {"type": "ValueError", "message": "card declined"}, 2, 4.0)
    text = "\n".join(timeline.render(entries, origin=T0))
    assert "FAILED ValueError: card declined (2 attempts)" in text
    assert text.splitlines()[-1].split()[-4:] == ["FAILED", "ValueError:", "card", "declined"]


def test_signal_waits_take_buffered_signals_first_and_in_order():
    entries = build(
        SignalReceived(time=T0 + 1, signal="go", payload="first"),
        SignalWaitStarted(seq=0, time=T0 + 2, signal="go"),  # answered at once by the buffered one
        SignalWaitStarted(seq=1, time=T0 + 2, signal="go"),
        SignalReceived(time=T0 + 5, signal="go", payload="second"),
        ActivityScheduled(seq=2, time=T0 + 5, activity="app:use"),
    )
    waits = by_seq(entries)
    assert (waits[0].state, waits[0].result, waits[0].duration) == ("received", "'first'", 0.0)
    assert (waits[1].state, waits[1].result, waits[1].duration) == ("received", "'second'", 3.0)
    assert [e.command for e in entries if e.kind == "signal"] == ["signal 'go' received"] * 2


def test_a_signal_wait_times_out_and_a_later_signal_goes_to_the_next_wait():
    entries = build(
        SignalWaitStarted(seq=0, time=T0, signal="go", timeout_at=T0 + 10),
        TimerFired(seq=0, time=T0 + 10),
        SignalWaitStarted(seq=1, time=T0 + 10, signal="go"),
        SignalReceived(time=T0 + 12, signal="go", payload="late"),
    )
    waits = by_seq(entries)
    assert waits[0].command == "wait_signal('go', timeout=10.0s)"
    assert (waits[0].state, waits[0].duration, waits[0].result) == ("timed_out", 10.0, "None (timed out)")
    assert (waits[1].state, waits[1].result) == ("received", "'late'")
    assert "10.0s  timed out" in "\n".join(timeline.render(entries, origin=T0))


def test_all_of_waits_take_signals_in_argument_order():
    entries = build(
        SignalWaitStarted(seq=0, time=T0, signal="vote"),
        SignalWaitStarted(seq=1, time=T0, signal="vote"),
        SignalReceived(time=T0 + 1, signal="vote", payload="x"),
        SignalReceived(time=T0 + 2, signal="vote", payload="y"),
        ActivityScheduled(seq=2, time=T0 + 2, activity="app:tally"),
    )
    waits = by_seq(entries)
    assert [waits[0].result, waits[1].result] == ["'x'", "'y'"]


def test_a_cancel_ends_the_wait_and_later_signals_are_not_its_answer():
    entries = build(
        SignalWaitStarted(seq=0, time=T0, signal="go"),
        CancelRequested(time=T0 + 1),
        SignalReceived(time=T0 + 2, signal="go", payload="too late"),
        ActivityScheduled(seq=1, time=T0 + 2, activity="app:undo"),
    )
    waits = by_seq(entries)
    assert (waits[0].state, waits[0].result) == ("open", "(abandoned)")
    assert (waits[1].state, waits[1].result) == ("open", "(waiting)")
    assert [e.kind for e in entries][2] == "cancel_requested"


def test_a_race_loser_is_abandoned_and_late_or_foreign_answers_change_nothing():
    entries = build(
        TimerStarted(seq=0, time=T0, fire_at=T0 + 60),
        ActivityScheduled(seq=1, time=T0, activity="app:quick"),
        ActivityCompleted(seq=1, time=T0 + 1, result="won"),
        ActivityCompleted(seq=1, time=T0 + 2, result="duplicate"),
        ChildStarted(seq=2, time=T0 + 1, workflow="app:sub", workflow_id="w/2"),
        ChildCompleted(seq=2, time=T0 + 3, workflow_id="w/2", parent_run="an-earlier-run", result="stale"),
    )
    timer, quick, child = by_seq(entries).values()
    assert (timer.state, timer.result) == ("open", "(abandoned)")
    assert quick.result == "'won'"
    assert (child.command, child.state, child.result) == ("child sub w/2", "open", "(waiting)")


def test_continue_as_new_and_json_form():
    entries = build(WorkflowContinued(time=T0 + 1, new_run="f" * 32, args=(2, 10)))
    assert entries[-1].result == "run ffffffffffff: (2, 10)"
    data = [e.as_dict() for e in build(ActivityScheduled(seq=0, time=T0, activity="a:b"),
                                       ActivityCompleted(seq=0, time=T0 + 0.25, result=1))]
    assert data[1]["duration"] == 0.25 and data[1]["name"] == "a:b" and "_timeout_index" not in data[1]
    assert data[0]["kind"] == "started" and data[0]["command"] == "started flow(1)"
