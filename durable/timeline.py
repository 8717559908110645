"""``durable history``: a workflow's history folded into a timeline, one line per command.

History records several events per command (scheduled, retried, answered) and
places signals and cancel requests by position. An operator asks other
questions: what did the workflow ask for, when, how long did the answer take,
and what came back? ``build`` answers them from history alone, so it works on
a machine where the workflow's code is not importable.

One thing history does not record is which ``wait_signal`` took which signal:
the engine decides that on replay. ``build`` pairs them by the engine's rule
for waits reached one after another (each takes the oldest unconsumed signal
of its name that arrived before its timeout fired and before the workflow
moved on). Inside ``any_of`` a signal that landed after the race was decided,
but before the next step was recorded, may be shown on the losing wait;
``durable inspect`` replays the code and is exact. Signals always also get a
line of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .display import call_text, short, span, when
from .events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    ErrorInfo,
    Event,
    MarkerRecorded,
    SignalReceived,
    SignalWaitStarted,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinued,
    WorkflowFailedEvent,
)

__all__ = ["Entry", "build", "render", "short_error"]

# Entry.state values: ok, failed, fired, received, timed_out (answered); open (no answer in history:
# shown as "(waiting)", or "(abandoned)" once history shows the workflow past it: a race lost, a
# sibling failed, a cancel); "" for workflow-level lines (started, signal, cancel_requested, the end).


@dataclass
class Entry:
    """One line of the timeline: a command from recorded to answered, or a workflow-level event."""

    index: int  # history position of the event that opened it (-1: the start, which is in the meta hash)
    time: float
    seq: int  # -1 for workflow-level lines
    kind: str  # started, activity, timer, signal_wait, child, value, patch, signal, cancel_requested, ...
    command: str  # readable: add(1, 2), sleep 10.0s, wait_signal('closed', timeout=60.0s)
    name: str = ""  # the activity's or child's import path, the signal's name, the value's kind
    state: str = ""
    answered_at: float | None = None
    result: str = ""  # a cut repr of the result, or "Type: message" of the error
    attempts: int = 0  # activities: attempts made (failed retries + the answer, if any)
    error: dict[str, str] | None = None
    detail: str = ""  # what else an operator may want: a timer's deadline, the last retried error
    _timeout_index: int | None = field(default=None, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds from recorded to answered, None while open."""
        return None if self.answered_at is None else max(self.answered_at - self.time, 0.0)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["_timeout_index"]
        data["duration"] = self.duration
        return data


def build(events: Sequence[Event], *, started_at: float, call: str, name: str, run_id: str = "") -> list[Entry]:
    """The timeline of one run: a ``started`` line (``call`` is how it was called, from the meta
    hash), then one line per command and per workflow-level event, in history order."""
    entries = [Entry(-1, started_at, -1, "started", f"started {call}", name)]
    by_seq: dict[int, Entry] = {}
    signals: list[tuple[int, Entry]] = []
    for index, event in enumerate(events):
        entry = _opens(index, event)
        if entry is not None:
            entries.append(entry)
            if entry.seq >= 0:
                by_seq.setdefault(entry.seq, entry)
            if isinstance(event, SignalReceived):
                signals.append((index, entry))
            continue
        target = by_seq.get(event.seq)
        if target is not None and not (isinstance(event, (ChildCompleted, ChildFailed))
                                       and event.parent_run not in ("", run_id)):
            _answer(target, index, event)
    _pair_signals(events, [e for e in entries if e.kind == "signal_wait"], signals)
    for entry in entries:
        if entry.state == "open":  # no answer: still awaited, or the workflow went on without it
            went_on = _moved_on(events, entry.index) < len(events)
            entry.result = "(abandoned)" if went_on else "(waiting)"
    return entries


def _opens(index: int, event: Event) -> Entry | None:
    """The line an event starts, or None for an event that answers or updates one."""
    t = event.time
    match event:
        case ActivityScheduled():
            inline = " [inline]" if event.options.get("inline") else ""
            text = call_text(event.activity.rpartition(":")[2], event.args, event.kwargs) + inline
            return Entry(index, t, event.seq, "activity", text, event.activity, "open")
        case TimerStarted():
            return Entry(index, t, event.seq, "timer", f"sleep {span(event.fire_at - t)}", "timer", "open",
                         detail=f"until {when(event.fire_at)}")
        case SignalWaitStarted():
            timeout = "" if event.timeout_at is None else f", timeout={span(event.timeout_at - t)}"
            return Entry(index, t, event.seq, "signal_wait", f"wait_signal({event.signal!r}{timeout})",
                         event.signal, "open")
        case ChildStarted():
            text = f"child {event.workflow.rpartition(':')[2]} {event.workflow_id}"
            return Entry(index, t, event.seq, "child", text, event.workflow, "open")
        case ValueRecorded():
            entry = Entry(index, t, event.seq, "value", f"{event.what}()", event.what, "ok", t, short(event.value, 60))
            if event.error is not None:
                _fail(entry, ErrorInfo.from_dict(event.error))
            return entry
        case MarkerRecorded():
            return Entry(index, t, event.seq, "patch", f"patched({event.change_id!r})", event.change_id, "ok", t,
                         "True")
        case SignalReceived():
            return Entry(index, t, -1, "signal", f"signal {event.signal!r} received", event.signal,
                         result=short(event.payload, 60))
        case CancelRequested():
            return Entry(index, t, -1, "cancel_requested", "cancel requested", result=event.reason)
        case WorkflowCompleted():
            return Entry(index, t, -1, "completed", "completed", result=short(event.result, 60))
        case WorkflowFailedEvent():
            entry = Entry(index, t, -1, "failed", "failed")
            _fail(entry, event.error_info())
            return entry
        case WorkflowCancelled():
            return Entry(index, t, -1, "cancelled", "cancelled")
        case WorkflowContinued():
            return Entry(index, t, -1, "continued", "continued as new",
                         result=f"run {event.new_run[:12]}: " + call_text("", event.args, event.kwargs))
    return None


def _answer(entry: Entry, index: int, event: Event) -> None:
    """Apply an event that answers or updates ``entry``; the first answer wins, as in replay."""
    if isinstance(event, ActivityRetrying):
        info = ErrorInfo.from_dict(event.error)
        entry.attempts = max(entry.attempts, event.attempt)
        entry.detail = f"attempt {event.attempt} failed: {info.type}: {info.message}"[:120]
        return
    if entry.state != "open":
        return  # a late answer (a race already decided, a duplicate): replay ignores it too
    if isinstance(event, TimerFired):
        if entry.kind == "signal_wait":
            entry._timeout_index = index  # the pairing below decides whether the timeout won
            entry.answered_at = event.time
        else:
            entry.state, entry.answered_at, entry.result = "fired", event.time, "fired"
        return
    entry.answered_at = event.time
    match event:
        case ActivityCompleted():
            entry.state, entry.result, entry.attempts = "ok", short(event.result, 60), event.attempt
        case ActivityFailedEvent():
            entry.attempts = event.attempt
            _fail(entry, event.error_info())
        case ChildCompleted():
            entry.state, entry.result = "ok", short(event.result, 60)
        case ChildFailed():
            _fail(entry, event.error_info())


def _fail(entry: Entry, info: ErrorInfo) -> None:
    entry.state = "failed"
    entry.error = {"type": info.type, "message": info.message}
    entry.result = short_error(info.type, info.message)


def short_error(type_name: str, message: str, width: int = 80) -> str:
    """``Type: message`` on one line, cut to ``width``."""
    text = f"{type_name}: {message}".replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _pair_signals(events: Sequence[Event], waits: list[Entry], signals: list[tuple[int, Entry]]) -> None:
    """Give each signal wait the signal the engine gave it (see the module docstring)."""
    taken: set[int] = set()
    for wait in sorted(waits, key=lambda e: e.seq):
        limit = _moved_on(events, wait.index)
        if wait._timeout_index is not None:
            limit = min(limit, wait._timeout_index)
        for index, signal in signals:
            if index < limit and index not in taken and signal.name == wait.name:
                taken.add(index)
                wait.state, wait.answered_at, wait.result = "received", signal.time, signal.result
                break
        else:
            if wait._timeout_index is not None:
                wait.state, wait.result = "timed_out", "None (timed out)"


def _moved_on(events: Sequence[Event], start: int) -> int:
    """Where history shows the workflow past the commands recorded with the one at ``start``:
    the next command recorded after that batch, a cancel request, or the run's end."""
    position = start
    while position + 1 < len(events) and events[position + 1].schedules:
        position += 1  # commands recorded together: a composite's leaves (or a wait answered at once)
    for index in range(position + 1, len(events)):
        event = events[index]
        if event.schedules or event.seq < 0 and not isinstance(event, SignalReceived):
            return index  # a later command, a cancel request, or the end
    return len(events)


def render(entries: list[Entry], *, origin: float, iso: bool = False) -> list[str]:
    """The timeline as text: time (``+`` from ``origin``, or local ISO), seq, command, took, result."""
    rows = []
    for entry in entries:
        moment = when(entry.time, precise=True) if iso else "+" + span(entry.time - origin)
        seq = "-" if entry.seq < 0 else str(entry.seq)
        took = "" if entry.seq < 0 or entry.duration is None else span(entry.duration)
        result = entry.result
        if entry.state == "failed":
            result = f"FAILED {result}"
        elif entry.state == "timed_out":
            result = "timed out"
        if entry.attempts > 1:
            result += f" ({entry.attempts} attempts)"
        if entry.detail and (entry.state == "open" or entry.kind == "timer"):
            result += f"  [{entry.detail}]"
        rows.append([moment, seq, _cut(entry.command, 56), took, result.strip()])
    return [f"  {line}" for line in _columns(["time", "seq", "command", "took", "result"], rows)]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _columns(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Like ``display.table``, but time, seq and took right-aligned (numbers line up)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    right = {0, 1, 3}

    def line(cells: list[str]) -> str:
        out = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
        return "  ".join([*out, cells[-1]]).rstrip()

    return [line(headers), *(line(r) for r in rows)]
