"""The replay engine: history in, decision out. Pure: no Redis, no RQ, no clock.

A workflow is a generator. Every value it yields is a command and gets the
next sequence number (0, 1, 2, ...). History holds, per sequence number, the
event that recorded the command (``schedules``) and, once known, the event that
answered it (``resolves``). Driving a fresh generator through that history
rebuilds its exact state: each yielded command must match the recorded one
(same kind and name) and receives the recorded answer, until the generator
asks for something history does not have yet. That is the decision returned:
``schedule`` a new command, ``wait`` for an answer, ``complete`` or ``fail``.

The engine is incremental: ``feed`` more events and ``step`` again, and only
the new events are applied. That is what lets a worker keep a live generator
between steps and pay O(new events) instead of O(history).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .commands import Command
from .context import WorkflowInfo, in_workflow
from .errors import ActivityFailed, NonDeterminismError
from .events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ErrorInfo,
    Event,
    TimerFired,
    WorkflowCompleted,
    WorkflowFailedEvent,
)

__all__ = ["Decision", "Replayer"]

DecisionKind = Literal["schedule", "wait", "complete", "fail"]


@dataclass(frozen=True)
class Decision:
    """What the runtime must do next for a workflow.

    ``schedule``: record ``command`` at ``seq`` and dispatch it. ``wait``: the
    generator is suspended on ``seq``, whose answer is not in history yet.
    ``complete``: the workflow returned ``result``. ``fail``: it raised
    ``error``.
    """

    kind: DecisionKind
    seq: int = -1
    command: Command | None = None
    result: Any = None
    error: ErrorInfo | None = None


_FIX_HINT = (
    "Workflow code must yield the same commands in the same order on every replay: move time, "
    "randomness and I/O into activities, and keep the old code path for runs started before the change "
    "(or let them finish before deploying it)."
)


class Replayer:
    """Drives one run of a workflow generator through its history."""

    def __init__(
        self,
        func: Callable[..., Generator[Any, Any, Any]],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        workflow_id: str = "",
        run_id: str = "",
        name: str = "",
    ) -> None:
        self._func = func
        self._args = args
        self._kwargs = dict(kwargs or {})
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._name = name or getattr(func, "__qualname__", "workflow")
        self._gen: Generator[Any, Any, Any] | None = None
        self._scheduled: dict[int, Event] = {}
        self._resolved: dict[int, tuple[int, Event]] = {}  # seq -> (history index, event)
        self._terminal: Event | None = None
        self._length = 0
        self._last_command_index = -1
        self._next_seq = 0
        self._pending: tuple[int, Command] | None = None
        self._outcome: Decision | None = None

    @property
    def history_length(self) -> int:
        """How many history events this replayer has been fed."""
        return self._length

    def feed(self, events: Iterable[Event]) -> None:
        """Add history events, in history order, after those already fed."""
        for event in events:
            index = self._length
            self._length += 1
            if event.schedules:
                self._scheduled[event.seq] = event
                self._last_command_index = index
            elif event.resolves:
                self._resolved.setdefault(event.seq, (index, event))
            elif isinstance(event, (WorkflowCompleted, WorkflowFailedEvent)):
                self._terminal = event
                self._last_command_index = index

    def step(self) -> Decision:
        """Apply what history answers and return what the workflow needs next.

        Raises:
            NonDeterminismError: the code yielded something other than what
                history recorded, or more or fewer commands.
        """
        if self._gen is None and self._outcome is None:
            self._gen = self._func(*self._args, **self._kwargs)
            gen = self._gen
            self._resume(lambda: gen.send(None), replaying=self._last_command_index >= 0)
        while self._outcome is None:
            assert self._pending is not None and self._gen is not None
            seq, command = self._pending
            recorded = self._scheduled.get(seq)
            if recorded is None:
                if self._terminal is not None:
                    raise NonDeterminismError(
                        f"workflow {self._name!r} ({self._workflow_id}) is not deterministic at sequence {seq}: "
                        f"history recorded that the workflow ended there, but the code now yields "
                        f"{command.describe()}. {_FIX_HINT}"
                    )
                return Decision("schedule", seq, command)
            self._match(seq, command, recorded)
            answer = self._resolved.get(seq)
            if answer is None:
                return Decision("wait", seq, command)
            index, event = answer
            del self._scheduled[seq]
            del self._resolved[seq]
            self._pending = None
            self._answer(event, replaying=index < self._last_command_index)
        return self._finish(self._outcome)

    def _answer(self, event: Event, *, replaying: bool) -> None:
        gen = self._gen
        assert gen is not None
        if isinstance(event, ActivityCompleted):
            value = event.result
            self._resume(lambda: gen.send(value), replaying=replaying)
        elif isinstance(event, ActivityFailedEvent):
            info = event.error_info()
            exc = ActivityFailed(
                self._activity_name(event.seq), info.type, info.message, info.traceback, info.exception, event.attempt
            )
            self._resume(lambda: gen.throw(exc), replaying=replaying)
        elif isinstance(event, TimerFired):
            self._resume(lambda: gen.send(None), replaying=replaying)
        else:  # pragma: no cover - feed() only indexes resolving events
            raise TypeError(f"cannot answer a command with {type(event).__name__}")

    def _activity_name(self, seq: int) -> str:
        recorded = self._scheduled.get(seq)
        return getattr(recorded, "activity", "?")

    def _resume(self, action: Callable[[], Any], *, replaying: bool) -> None:
        """Run workflow code until its next yield, and note what it asked for."""
        info = WorkflowInfo(self._workflow_id, self._run_id, self._name, replaying)
        gen = self._gen
        assert gen is not None
        with in_workflow(info):
            while True:
                try:
                    value = action()
                except StopIteration as stop:
                    self._outcome = Decision("complete", result=stop.value)
                    return
                except Exception as exc:  # the workflow's own error: it fails the workflow
                    self._outcome = Decision("fail", error=ErrorInfo.from_exception(exc))
                    return
                if isinstance(value, Command):
                    self._pending = (self._next_seq, value)
                    self._next_seq += 1
                    return
                bad = TypeError(
                    f"a workflow may only yield durable commands (an activity call, durable.sleep(...)), "
                    f"not {type(value).__name__}: {value!r:.80}"
                )
                action = functools.partial(gen.throw, bad)  # thrown at the offending yield

    def _match(self, seq: int, command: Command, recorded: Event) -> None:
        rec_kind = getattr(recorded, "kind", recorded.type)
        rec_name = getattr(recorded, "name", rec_kind)
        if rec_kind != command.kind or rec_name != command.name:
            raise NonDeterminismError(
                f"workflow {self._name!r} ({self._workflow_id}) is not deterministic at sequence {seq}: "
                f"history recorded {rec_kind} {rec_name} but the code now yields {command.describe()}. {_FIX_HINT}"
            )

    def _finish(self, outcome: Decision) -> Decision:
        """Check that history has nothing the finished code never reached."""
        leftover = sorted(self._scheduled)
        if leftover:
            seq = leftover[0]
            recorded = self._scheduled[seq]
            raise NonDeterminismError(
                f"workflow {self._name!r} ({self._workflow_id}) is not deterministic at sequence {seq}: "
                f"history recorded {getattr(recorded, 'kind', '?')} {getattr(recorded, 'name', '?')} but the code "
                f"now {'returns' if outcome.kind == 'complete' else 'raises'} before yielding it. {_FIX_HINT}"
            )
        terminal = self._terminal
        if isinstance(terminal, WorkflowCompleted) and outcome.kind != "complete":
            assert outcome.error is not None
            raise NonDeterminismError(
                f"workflow {self._name!r} ({self._workflow_id}) is not deterministic: history recorded that it "
                f"completed, but the code now raises {outcome.error.type}: {outcome.error.message}. {_FIX_HINT}"
            )
        if isinstance(terminal, WorkflowFailedEvent) and outcome.kind != "fail":
            raise NonDeterminismError(
                f"workflow {self._name!r} ({self._workflow_id}) is not deterministic: history recorded that it "
                f"failed with {terminal.error_info().type}, but the code now returns normally. {_FIX_HINT}"
            )
        return outcome
