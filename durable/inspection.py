"""``durable inspect``: where a workflow's generator stands, and its local variables.

A suspended workflow lives only as its history; no process holds its frame
(a worker's cache is private and may be gone). So inspection rebuilds it the
way every worker does, by replaying the history through the engine, and then
reads the generator's suspended frame: file, line, source, locals, and the
frames of any ``yield from`` helpers it is inside. It writes nothing and runs
no activity (the engine only hands recorded results back); the workflow's own
code between yields does run, exactly as in a worker's replay.
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import clock, timeline
from .commands import ActivityCall, AllOf, AnyOf, Command, RecordValue, StartChild, StartTimer, WaitSignal
from .display import call_text, short, span, when
from .events import ActivityRetrying, ErrorInfo, Event
from .registry import replayer_for
from .store import TERMINAL, Store

__all__ = ["Frame", "Waiting", "Inspection", "inspect_workflow", "render"]

CONTEXT = 2  # source lines shown before and after the suspended line


@dataclass(frozen=True)
class Frame:
    """One suspended generator frame: where it stands and its locals (cut reprs)."""

    function: str
    filename: str
    lineno: int
    source: list[tuple[int, str]]  # (line number, text) around ``lineno``; empty without source
    locals: dict[str, str]


@dataclass(frozen=True)
class Waiting:
    """One leaf command the generator waits on, joined with what history says about it."""

    seq: int
    command: str
    name: str  # the activity's or child's import path, the signal's name, the value's kind
    state: str  # waiting (recorded, no answer), answered (a finished part of all_of), new (not recorded yet)
    since: float | None  # when it was recorded
    detail: str = ""


@dataclass(frozen=True)
class Inspection:
    """What ``durable inspect`` reports about one workflow's current run."""

    workflow_id: str
    name: str
    path: str
    status: str
    run_id: str
    events: int
    replay: str  # the engine's decision: wait, schedule, complete, fail, cancelled, continue
    held: str | None
    custom_status: str | None
    frames: list[Frame] = field(default_factory=list)  # outermost first; empty once the run has ended
    waiting_on: str = ""  # the yielded command: an activity, sleep, wait_signal, all_of(...), any_of(...)
    waiting: list[Waiting] = field(default_factory=list)
    outcome: str = ""  # how the run ended (or ends, when replay is ahead of the recorded status)

    @property
    def suspended(self) -> bool:
        return bool(self.frames)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["suspended"] = self.suspended
        for frame in data["frames"]:
            frame["source"] = [{"line": n, "text": t} for n, t in frame["source"]]
        return data


def inspect_workflow(store: Store, workflow_id: str) -> Inspection:
    """Replay the workflow's current run (reading only) and describe where its generator stands.

    Raises:
        WorkflowNotFound: no workflow has that id.
        ImportError: its code cannot be imported here.
        NonDeterminismError: the code here no longer replays its history.
    """
    meta, history = store.load(workflow_id)  # no pack=: an operator's look must not write
    if meta is None:
        meta = store.meta(workflow_id)  # raises WorkflowNotFound
    replayer = replayer_for(meta)
    replayer.feed(history)
    decision = replayer.step()
    custom = replayer.custom_status
    base = Inspection(workflow_id, meta.name, meta.path, meta.status, meta.run_id, len(history), decision.kind,
                      meta.stuck or None, None if custom is None else short(custom, 80))
    gen = replayer.generator
    command, leaves = replayer.pending
    if command is None or gen is None:
        return replace(base, outcome=_outcome(decision.kind, decision.result, decision.error))
    frames = [_frame(f) for f in _stack(gen)]
    # Which signal waits of an all_of already got their signal: history does not say, the timeline's
    # pairing does (exactly, while the composite is still pending: no race among them was decided).
    signalled = {e.seq for e in timeline.build(history, started_at=0.0, call="", name="")
                 if e.kind == "signal_wait" and e.state in ("received", "timed_out")}
    waiting = [_waiting(store, seq, leaf, history, seq in signalled) for seq, leaf in leaves]
    return replace(base, frames=frames, waiting_on=describe(command), waiting=waiting)


def _stack(gen: Generator[Any, Any, Any]) -> list[Any]:
    """The frames of ``gen`` and of the generators it delegates to with ``yield from``, outermost first."""
    frames = []
    current: Any = gen
    while current is not None and getattr(current, "gi_frame", None) is not None:
        frames.append(current.gi_frame)
        current = getattr(current, "gi_yieldfrom", None)
    return frames


def _frame(frame: Any) -> Frame:
    code = frame.f_code
    lineno = frame.f_lineno
    lines = []
    for number in range(max(lineno - CONTEXT, 1), lineno + CONTEXT + 1):
        text = linecache.getline(code.co_filename, number, frame.f_globals)
        if text:
            lines.append((number, text.rstrip("\n")))
    local_vars = {name: short(value, 100) for name, value in frame.f_locals.items()}
    return Frame(code.co_qualname, code.co_filename, lineno, lines, local_vars)


def describe(command: Command) -> str:
    """A command as the workflow wrote it, arguments cut short."""
    match command:
        case ActivityCall():
            return call_text(command.activity.rpartition(":")[2], command.args, command.kwargs)
        case StartTimer():
            return f"sleep({command.seconds!r})" if command.until is None else f"sleep_until({when(command.until)})"
        case WaitSignal():
            timeout = "" if command.timeout is None else f", timeout={command.timeout!r}"
            return f"wait_signal({command.signal!r}{timeout})"
        case StartChild():
            return "child " + call_text(command.workflow.rpartition(":")[2], command.args, command.kwargs)
        case RecordValue():
            return f"{command.what}()"
        case AllOf() | AnyOf():
            return f"{command.kind}({', '.join(describe(child) for child in command.children)})"
    return f"{command.kind} {command.name}"


def _waiting(store: Store, seq: int, command: Command, history: Sequence[Event], signalled: bool) -> Waiting:
    """What history says about leaf ``seq``: recorded when, answered or not, retries, deadlines."""
    recorded = answer = None
    retries: list[ActivityRetrying] = []
    for event in history:
        if event.seq != seq:
            continue
        if event.schedules and recorded is None:
            recorded = event
        if event.resolves and answer is None:
            answer = event
        if isinstance(event, ActivityRetrying):
            retries.append(event)
    text = describe(command)
    if recorded is None:
        return Waiting(seq, text, command.name, "new", None, "not recorded yet: the next step records and starts it")
    if signalled:
        return Waiting(seq, text, command.name, "answered", recorded.time, "answered by a signal or its timeout")
    if answer is not None and not isinstance(command, WaitSignal):
        return Waiting(seq, text, command.name, "answered", recorded.time, f"answered by {answer.type}")
    now = clock.now()
    detail = f"for {span(now - recorded.time)}"
    match command:
        case StartTimer():
            fire_at = getattr(recorded, "fire_at", 0.0)
            detail = f"fires at {when(fire_at)} ({_relative(fire_at - now)})"
        case WaitSignal():
            timeout_at = getattr(recorded, "timeout_at", None)
            detail += ", no timeout" if timeout_at is None else f", times out at {when(timeout_at)} " \
                                                                f"({_relative(timeout_at - now)})"
        case StartChild():
            child = getattr(recorded, "workflow_id", "")
            status = store.statuses([child])[0] if child else None
            detail += f", child {child} is {status or 'not created yet'}"
        case ActivityCall() if retries:
            last = retries[-1]
            info = ErrorInfo.from_dict(last.error)
            detail += f", attempt {last.attempt} failed ({timeline.short_error(info.type, info.message, 60)})"
            if last.retry_at > now:
                detail += f", retry at {when(last.retry_at)}"
    return Waiting(seq, text, command.name, "waiting", recorded.time, detail)


def _relative(seconds: float) -> str:
    return f"in {span(seconds)}" if seconds >= 0 else f"due {span(-seconds)} ago"


def _outcome(kind: str, result: Any, error: ErrorInfo | None) -> str:
    if kind == "complete":
        return f"returned {short(result, 100)}"
    if kind == "continue":
        return "continued as new"
    if error is not None:
        prefix = "cancelled: " if kind == "cancelled" else "raised "
        return prefix + timeline.short_error(error.type, error.message, 100)
    return kind


def render(report: Inspection) -> list[str]:
    """The inspection as text: a header, the stack (innermost last, with source and locals), the waits."""
    lines = [f"{report.workflow_id}  {report.name}  {report.status}  (run {report.run_id[:12]}, "
             f"{report.events} events replayed)"]
    if report.held:
        lines.append(f"held: {report.held}")
    if report.custom_status is not None:
        lines.append(f"custom status: {report.custom_status}")
    if not report.suspended:
        ahead = "" if report.status in TERMINAL or report.replay == "continue" else \
            " (replay is ahead of the recorded status: the next step records it)"
        lines.append(f"finished: the workflow {report.outcome}; no frame to show{ahead}")
        return lines
    lines.append("")
    lines.append("suspended at (innermost last):")
    for depth, frame in enumerate(report.frames):
        innermost = depth == len(report.frames) - 1
        lines.append(f"  {_where(frame.filename)}:{frame.lineno} in {frame.function}")
        for number, text in frame.source:
            if innermost or number == frame.lineno:
                marker = ">" if number == frame.lineno else " "
                lines.append(f"    {marker} {number:>4} | {text}")
        if frame.locals:
            width = max(len(name) for name in frame.locals)
            lines.append("    locals:")
            lines.extend(f"      {name.ljust(width)} = {value}" for name, value in frame.locals.items())
    lines.append("")
    lines.append(f"waiting on: {report.waiting_on}")
    for item in report.waiting:
        since = "" if item.since is None else f" since {when(item.since)}"
        lines.append(f"  seq {item.seq:<4} {item.command}: {item.state}{since}, {item.detail}".rstrip(", "))
    return lines


def _where(filename: str) -> str:
    """A file name relative to the working directory when it lies below it (shorter to read)."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative
