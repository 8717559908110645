"""Compact history (``durable/packed.py``, ``durable/replay_packed.py``): replaying runs of
completed activities from packed blocks must be indistinguishable from replaying the events.

Every case replays the same history twice, from the events and from packed blocks of
several sizes (odd sizes split pairs across blocks), and compares all that can be seen:
what the code received at each resume and whether it was replaying, the decision or
the ``NonDeterminismError`` message, and the engine's state after (``open_command``,
``attempt_recorded``, the length and last command position, and what history still
holds per sequence number).
"""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest

import durable
from durable.errors import NonDeterminismError
from durable.events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    CancelRequested,
    ErrorInfo,
    MarkerRecorded,
    SignalReceived,
    SignalWaitStarted,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    to_dict,
)
from durable.packed import History, PairRun
from durable.registry import resolve
from durable.replay import Replayer
from durable.serialization import (
    decode_entries,
    decode_event,
    encode_events,
    pack_events,
    unpack_blocks,
)

SIZES = (2, 3, 5, 8, 64)  # events per block


@durable.activity
def step(i):
    return i


@durable.activity
def other(i):
    return i


def pair(seq, act=step, result=None):
    return [ActivityScheduled(seq=seq, time=100.0 + seq, activity=act.path, args=(seq,), options={"timeout": 5}),
            ActivityCompleted(seq=seq, time=100.5 + seq, result=seq * 10 if result is None else result)]


def pairs(start, stop, act=step):
    return [event for seq in range(start, stop) for event in pair(seq, act)]


def packed(events, size):
    """The history a cold load returns when the full blocks of ``size`` events are packed
    (and the entries after them are read from the list)."""
    full = len(events) // size * size
    parts = unpack_blocks([pack_events("r", first, events[first:first + size]) for first in range(0, full, size)],
                          "r", size)
    assert parts is not None
    return History([*parts, *decode_entries(encode_events(events[full:]), full)])


def saw(seen, value):
    seen.append((value, durable.workflow_info().is_replaying))


def observe(flow, history, *, more=()):
    """All that a replay of ``history`` shows; ``more``: events fed after the first step."""
    seen: list = []
    replayer = Replayer(flow, (seen,), workflow_id="wf", run_id="r", name="flow")
    replayer.feed(history)
    outcomes = []
    for events in (None, more) if more else (None,):
        if events is not None:
            replayer.feed(events)
        try:
            decision = replayer.step()
        except NonDeterminismError as exc:
            outcomes.append(("non-deterministic", str(exc)))
            break
        error = decision.error and (decision.error.type, decision.error.message)
        outcomes.append((decision.kind, decision.new, decision.waiting, repr(decision.result), error,
                         decision.args, decision.kwargs))
    seqs = range(-1, 30)
    replayer._unpack_all()  # what history still holds per seq, as events (a no-op for real events)
    state = (replayer.history_length, replayer._last_command_index, dict(replayer._open),
             {seq: replayer.open_command(seq) for seq in seqs},
             [(seq, n) for seq in seqs for n in range(1, 4) if replayer.attempt_recorded(seq, n)],
             dict(replayer._scheduled), dict(replayer._answers), replayer.pending)
    return seen, outcomes, state


def check_same(flow, events, *, more=()):
    """Replay ``events`` and each packing of them; all must show the same. Returns what they show."""
    expected = observe(flow, events, more=more)
    for size in SIZES:
        assert observe(flow, packed(events, size), more=more) == expected, f"blocks of {size}"
    return expected


# -- runs of activities ------------------------------------------------------------------------


def sequence(seen, n=10):
    for i in range(n):
        saw(seen, (yield step(i)))
    return "done"


@pytest.mark.parametrize("recorded", [0, 1, 4, 9, 10])
def test_a_run_of_completed_activities_replays_as_from_events(recorded):
    seen, outcomes, _ = check_same(sequence, pairs(0, recorded))
    assert [value for value, _ in seen] == [i * 10 for i in range(recorded)]
    assert outcomes[0][0] == ("complete" if recorded == 10 else "schedule")


def test_the_compact_path_builds_no_event_for_a_run_it_replays():
    history = packed(pairs(0, 40), 8)
    runs = [part for part in history.parts if isinstance(part, PairRun)]
    assert len(runs) == 10
    seen: list = []
    replayer = Replayer(sequence, (seen, 41), workflow_id="wf", run_id="r")
    replayer.feed(history)
    assert replayer.step().new[0][0] == 40
    assert all(run._events is None for run in runs)  # replayed from the columns alone
    assert [flag for _, flag in seen] == [True] * 39 + [False]


def test_more_history_than_code_names_the_first_command_left():
    seen, outcomes, _ = check_same(sequence, pairs(0, 14))
    assert outcomes[0][0] == "non-deterministic" and "sequence 10" in outcomes[0][1]


@pytest.mark.parametrize("at", range(10))
def test_a_mismatch_inside_a_compact_run_has_the_same_message(at):
    def flow(seen):
        for i in range(10):
            saw(seen, (yield (other if i == at else step)(i)))

    _, outcomes, _ = check_same(flow, pairs(0, 10))
    assert outcomes == [("non-deterministic", outcomes[0][1])] and f"sequence {at}" in outcomes[0][1]


def test_a_mismatch_right_after_a_run():
    def activity_instead_of_timer(seen):
        for i in range(7):
            saw(seen, (yield step(i)))

    def other_after_timer(seen):
        for i in range(6):
            saw(seen, (yield step(i)))
        yield durable.sleep(5)
        saw(seen, (yield other(7)))

    events = pairs(0, 6) + [TimerStarted(seq=6, fire_at=1.0), TimerFired(seq=6)] + pairs(7, 10)
    _, first, _ = check_same(activity_instead_of_timer, events)
    assert "sequence 6: history recorded timer" in first[0][1]
    _, second, _ = check_same(other_after_timer, events)
    assert "sequence 7" in second[0][1] and other.path in second[0][1]


def test_code_that_returns_inside_a_run():
    def short(seen):
        for i in range(3):
            saw(seen, (yield step(i)))
        return "early"

    _, outcomes, _ = check_same(short, pairs(0, 8))
    assert "sequence 3" in outcomes[0][1] and "returns before yielding it" in outcomes[0][1]


def test_code_that_fails_inside_a_run():
    def failing(seen):
        for i in range(3):
            saw(seen, (yield step(i)))
        raise KeyError("missing")

    _, outcomes, _ = check_same(failing, pairs(0, 8))
    assert outcomes[0][0] == "non-deterministic" and "raises before yielding it" in outcomes[0][1]
    _, ended, _ = check_same(failing, pairs(0, 3))
    assert ended[0][0] == "fail"


# -- other events between and inside runs ------------------------------------------------------


def mixed(seen):
    for i in range(5):
        saw(seen, (yield step(i)))
    saw(seen, (yield durable.sleep(5)))
    for i in range(6, 9):
        saw(seen, (yield step(i)))
    saw(seen, (yield durable.wait_signal("go")))
    saw(seen, (yield durable.now()))
    for i in range(11, 13):
        saw(seen, (yield step(i)))
    saw(seen, (yield durable.wait_signal("more")))


def test_timers_signals_and_values_between_runs():
    events = (pairs(0, 5) + [TimerStarted(seq=5, fire_at=1.0), TimerFired(seq=5)] + pairs(6, 8)
              + [SignalReceived(signal="go", payload="early")] + pairs(8, 9)
              + [SignalWaitStarted(seq=9, signal="go"), ValueRecorded(seq=10, what="now", value=123.0)]
              + pairs(11, 13) + [SignalWaitStarted(seq=13, signal="more")])
    seen, outcomes, state = check_same(mixed, events)
    assert ("early", True) in seen and (123.0, True) in seen
    assert outcomes[0][:3] == ("wait", (), (13,))
    assert isinstance(state[3][13], SignalWaitStarted)
    # the signal comes: fed after the step, and the run goes on the same way
    _, later, _ = check_same(mixed, events, more=[SignalReceived(signal="more", payload="late")])
    assert later[1][0] == "complete"


def test_failed_and_retried_activities_inside_a_block():
    def flow(seen):
        for i in range(5):
            saw(seen, (yield step(i)))
        try:
            yield step(5)
        except durable.ActivityFailed as exc:
            saw(seen, ("failed", exc.error_type, exc.attempts))
        for i in range(6, 9):
            saw(seen, (yield step(i)))

    error = ErrorInfo("ValueError", "boom", "").to_dict()
    events = (pairs(0, 3)
              + [ActivityScheduled(seq=3, activity=step.path, args=(3,)),
                 ActivityRetrying(seq=3, attempt=1, error=error), ActivityCompleted(seq=3, result=30, attempt=2)]
              + pairs(4, 5)
              + [ActivityScheduled(seq=5, activity=step.path, args=(5,)),
                 ActivityFailedEvent(seq=5, error=error, attempt=3)]
              + pairs(6, 8)
              + [ActivityScheduled(seq=8, activity=step.path, args=(8,)),
                 ActivityRetrying(seq=8, attempt=1, error=error)])
    seen, outcomes, state = check_same(flow, events)
    assert ("failed", "ValueError", 3) in [value for value, _ in seen]
    assert outcomes[0][:3] == ("wait", (), (8,))
    assert isinstance(state[3][8], ActivityScheduled) and (8, 1) in state[4] and (3, 1) in state[4]


@pytest.mark.parametrize("where", [1, 3, 6])
def test_a_cancel_request_among_runs(where):
    def flow(seen):
        try:
            for i in range(8):
                saw(seen, (yield step(i)))
        except durable.Cancelled:
            saw(seen, "cancelled")
            saw(seen, (yield other(99)))
        return "compensated"

    events = pairs(0, 8)
    events.insert(2 * where + 1, CancelRequested())  # between the record and the result of activity `where`
    check_same(flow, events)
    check_same(flow, events[:2 * where + 2] + pair(where + 1, other, result="undo"))


def test_patched_code_over_a_run_recorded_without_and_with_the_patch():
    def flow(seen):
        for i in range(3):
            saw(seen, (yield step(i)))
        if (yield durable.patched("fix")):
            saw(seen, (yield other(3)))
        else:
            saw(seen, (yield step(3)))
        for i in range(4, 7):
            saw(seen, (yield step(i)))

    seen, outcomes, _ = check_same(flow, pairs(0, 7))  # recorded before the patch: the old path
    assert outcomes[0][0] == "complete" and len(seen) == 7
    with_marker = pairs(0, 3) + [MarkerRecorded(seq=3, change_id="fix")] + pair(4, other) + pairs(5, 8)
    seen, outcomes, _ = check_same(flow, with_marker)
    assert outcomes[0][0] == "complete" and (40, True) in seen


def test_composites_over_pairs_of_a_run():
    def flow(seen):
        saw(seen, (yield step(0)))
        saw(seen, (yield durable.all_of(step(1))))
        saw(seen, (yield durable.any_of(step(2))))
        for i in range(3, 6):
            saw(seen, (yield step(i)))

    seen, outcomes, _ = check_same(flow, pairs(0, 6))
    assert ([10], True) in seen and ((0, 20), True) in seen and outcomes[0][0] == "complete"


def test_a_fan_out_whose_records_and_answers_interleave():
    def flow(seen):
        saw(seen, (yield durable.all_of(step(0), step(1), step(2))))
        for i in range(3, 7):
            saw(seen, (yield step(i)))

    sched = [pair(seq)[0] for seq in range(3)]
    done = [pair(seq)[1] for seq in range(3)]
    # a scheduled activity right before another one's completion is not a pair
    events = [sched[0], sched[1], done[0], sched[2], done[2], done[1]] + pairs(3, 7)
    seen, outcomes, _ = check_same(flow, events)
    assert seen[0] == ([0, 10, 20], True) and outcomes[0][0] == "complete"


def test_the_next_step_after_a_compact_replay():
    seen, outcomes, _ = check_same(sequence, pairs(0, 7), more=pair(7))
    assert [kind[0] for kind in outcomes] == ["schedule", "schedule"] and outcomes[1][1][0][0] == 8


def test_events_fed_later_that_touch_a_held_run():
    def flow(seen):
        for i in range(6):
            saw(seen, (yield step(i)))

    events = pairs(0, 6)
    duplicate = [ActivityCompleted(seq=2, result=999), ActivityScheduled(seq=4, activity=other.path)]
    expected = observe(flow, events + duplicate)
    for size in SIZES:
        history = packed(events, size)
        seen: list = []
        replayer = Replayer(flow, (seen,), workflow_id="wf", run_id="r", name="flow")
        replayer.feed(history)
        replayer.feed(duplicate)  # before the step: the run is unpacked first
        with pytest.raises(NonDeterminismError) as caught:
            replayer.step()
        assert expected[1] == [("non-deterministic", str(caught.value))]


def test_a_history_fed_after_the_first_step_is_fed_as_events():
    def flow(seen):
        for i in range(3):
            saw(seen, (yield step(i)))
        yield durable.sleep(5)

    replayer = Replayer(flow, ([],), workflow_id="wf", run_id="r", name="flow")
    replayer.feed(pairs(0, 3))
    assert replayer.step().new[0][0] == 3
    # history that records activities at 2 and 3 again (the code already passed 2 and waits at 3)
    parts = unpack_blocks([pack_events("r", 6, pairs(2, 4))], "r", 4, first=6)
    assert isinstance(parts[0], PairRun)
    replayer.feed(History(parts))
    with pytest.raises(NonDeterminismError, match="sequence 3: history recorded activity"):
        replayer.step()


def test_a_run_whose_seqs_history_already_holds_is_fed_as_events():
    def flow(seen):
        for i in range(4):
            saw(seen, (yield step(i)))

    earlier = [ActivityScheduled(seq=1, activity=other.path), ActivityCompleted(seq=1, result="first")]
    seen, _, _ = check_same(flow, earlier + pairs(0, 4))
    assert seen[1] == ("first", True)  # the earliest answer wins, whatever holds the later one
    parts = unpack_blocks([pack_events("r", 2, pairs(0, 4))], "r", 8, first=2)
    assert observe(flow, History([earlier, *parts])) == observe(flow, earlier + pairs(0, 4))


def test_a_history_fed_after_other_events_keeps_history_positions():
    prefix = [SignalReceived(signal="go", payload=1)]
    seen: list = []
    replayer = Replayer(sequence, (seen, 7), workflow_id="wf", run_id="r", name="flow")
    replayer.feed(prefix)
    replayer.feed(packed(pairs(0, 6), 4))  # its positions start at 0, not after the signal
    decision = replayer.step()
    expected = observe(lambda seen: sequence(seen, 7), prefix + pairs(0, 6))
    assert (decision.new, replayer.history_length, replayer._last_command_index) == \
        (expected[1][0][1], expected[2][0], expected[2][1])
    assert seen == expected[0]


# -- the history as a sequence --------------------------------------------------------------------


def test_a_packed_history_reads_as_its_events():
    events = (pairs(0, 5) + [TimerStarted(seq=5, fire_at=1.0)] + pairs(6, 9)
              + [ActivityScheduled(seq=9, activity=step.path, kwargs={"k": [1]}, options={"queue": "q"})])
    for size in SIZES:
        history = packed(events, size)
        assert len(history) == len(events)
        assert [to_dict(e) for e in history] == [to_dict(e) for e in events]
        assert history == events and history[3] == events[3] and history[-2:] == events[-2:]


def test_pack_events_leaves_the_events_alone():
    events = pairs(0, 4)
    before = [to_dict(e) for e in events]
    pack_events("r", 0, events)
    assert [to_dict(e) for e in events] == before


# -- golden histories, packed ------------------------------------------------------------------

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_histories_replay_the_same_from_blocks(path):
    data = json.loads(path.read_text())
    events = [decode_event(base64.b64decode(item)) for item in data["history"]]
    args, kwargs = pickle.loads(base64.b64decode(data["input"]))
    func = resolve(data["workflow"]).func

    def replay(history):
        replayer = Replayer(func, args, kwargs, workflow_id=data["workflow_id"], run_id=data["run_id"])
        replayer.feed(history)
        decision = replayer.step()
        return decision.kind, repr(decision.result), decision.error and decision.error.type, replayer.history_length

    expected = replay(events)
    for size in SIZES:
        assert replay(packed(events, size)) == expected
