"""The replay engine: history in, decision out. Pure: no Redis, no RQ, no clock.

A workflow is a generator. Every leaf command it yields (an activity, a timer,
a signal wait, a child, a recorded value, a patch marker) gets the next
sequence number; ``all_of``/``any_of`` number their leaves depth first. History
holds, per sequence number, the event that recorded the command (``schedules``)
and the event that answered it (``resolves``); signals and cancel requests are
placed in history by position. Driving a fresh generator through that history
rebuilds its exact state:

- each yielded command must match what history recorded at its sequence number
  (same kind and name), else ``NonDeterminismError``;
- what the generator is suspended on is answered by the *earliest* event, by
  history position, that answers it: an activity's outcome, a fired timer, the
  first buffered signal of that name (or the wait's timeout), a child's end;
  for ``all_of`` the last of its children (or the first failure), for
  ``any_of`` the first;
- a cancel request earlier in history than that answer wins, and ``Cancelled``
  is raised at the ``yield`` instead.

The walk stops at the first thing history cannot answer, and that is the
decision: ``schedule`` new commands, ``wait``, or the run's end (``complete``,
``fail``, ``cancelled``, ``continue``). Because every choice depends only on
history order, a replay makes the same choices the live run made.

The engine is incremental: ``feed`` more events and ``step`` again, and only
the new events are applied.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .commands import (
    ActivityCall,
    AllOf,
    AnyOf,
    Command,
    ContinueAsNew,
    Patched,
    RecordValue,
    StartChild,
    StartTimer,
    WaitSignal,
)
from .context import RunState, in_workflow
from .decision import FIX_HINT, TERMINAL_KIND, Decision, check_ending, check_match, ended_by
from .errors import ActivityFailed, Cancelled, NonDeterminismError, WorkflowFailed
from .events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    ErrorInfo,
    Event,
    MarkerRecorded,
    SignalReceived,
    TimerFired,
    ValueRecorded,
)
from .packed import History
from .replay_packed import PackedReplay

__all__ = ["Decision", "Replayer"]

_LEAVES = frozenset({ActivityCall, StartTimer, WaitSignal, StartChild, RecordValue})  # Patched is decided first


@dataclass
class _Node:
    """What the generator waits on: a leaf with a seq, or a composite of nodes."""

    command: Command
    seq: int = -1
    children: list[_Node] = field(default_factory=list)

    def leaves(self) -> Iterator[_Node]:
        if self.children or isinstance(self.command, (AllOf, AnyOf)):
            for child in self.children:
                yield from child.leaves()
        else:
            yield self


@dataclass
class _Answer:
    index: int  # history position that decided it
    ok: bool
    value: Any  # the result, or the exception to raise
    signals: list[tuple[str, int]] = field(default_factory=list)  # signals it consumes


class Replayer(PackedReplay):
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
        self._state = RunState(workflow_id, run_id, self._name)
        self._gen: Generator[Any, Any, Any] | None = None
        self._scheduled: dict[int, Event] = {}
        self._answers: dict[int, tuple[int, Event]] = {}
        self._open: dict[int, Event] = {}  # recorded commands with no answer in history yet
        self._attempts: set[tuple[int, int]] = set()  # (seq, attempt) of recorded failed attempts
        self._signals: dict[str, list[tuple[int, Any]]] = {}
        self._cancels: deque[int] = deque()
        self._terminal: Event | None = None
        self._length = 0
        self._last_command_index = -1
        self._next_seq = 0
        self._pending: _Node | None = None
        self._outcome: Decision | None = None
        self._runs, self._span = {}, (0, 0)  # compact runs of completed activities (replay_packed)

    @property
    def history_length(self) -> int:
        """How many history events this replayer has been fed."""
        return self._length

    @property
    def custom_status(self) -> Any:
        """The last value workflow code passed to ``durable.set_status``."""
        return self._state.custom_status

    @property
    def generator(self) -> Generator[Any, Any, Any] | None:
        """The workflow's generator (None before the first ``step``), so that ``durable inspect``
        can read its suspended frame. Read it only: resuming it would desynchronise the replay."""
        return self._gen

    @property
    def pending(self) -> tuple[Command | None, tuple[tuple[int, Command], ...]]:
        """What the generator is suspended on after ``step``: the command it yielded and that
        command's leaves as ``(seq, command)`` pairs (several for ``all_of``/``any_of``);
        ``(None, ())`` before the first step and once the run has ended."""
        node = self._pending
        if node is None or self._outcome is not None:
            return None, ()
        return node.command, tuple((leaf.seq, leaf.command) for leaf in node.leaves())

    def feed(self, events: Iterable[Event]) -> None:
        """Add history events, in history order, after those already fed (a cold load's
        ``History`` keeps its compact runs compact)."""
        if type(events) is History:
            return self._feed_history(events)
        scheduled, answers, opened, runs = self._scheduled, self._answers, self._open, self._runs
        lo, hi = self._span
        index = self._length
        for event in events:
            kind = type(event)
            if runs and lo <= event.seq < hi:  # it touches a compact run: real events first
                self._unpack_all()
            if kind is ActivityScheduled:  # the two commonest events first, without the general checks
                scheduled[event.seq] = opened[event.seq] = event
                self._last_command_index = index
            elif kind is ActivityCompleted:
                opened.pop(event.seq, None)
                if event.seq not in answers:
                    answers[event.seq] = (index, event)
            else:
                self._feed_other(event, index)
            index += 1
        self._length = index

    def _feed_other(self, event: Event, index: int) -> None:
        if event.schedules:
            self._scheduled[event.seq] = event
            self._last_command_index = index
            if not event.resolves:
                self._open[event.seq] = event
        if isinstance(event, ActivityRetrying):
            self._attempts.add((event.seq, event.attempt))
        if event.resolves:
            self._open.pop(event.seq, None)
            if isinstance(event, (ChildCompleted, ChildFailed)) and event.parent_run not in ("", self._run_id):
                return  # the answer of a child started by an earlier run
            self._answers.setdefault(event.seq, (index, event))
        elif isinstance(event, SignalReceived):
            self._signals.setdefault(event.signal, []).append((index, event.payload))
        elif isinstance(event, CancelRequested):
            self._cancels.append(index)
        elif isinstance(event, tuple(TERMINAL_KIND)):
            self._terminal = event
            self._last_command_index = index

    def open_command(self, seq: int) -> Event | None:
        """The event that recorded command ``seq`` if history has no answer to it yet
        (whether or not the generator still waits on it)."""
        return self._open.get(seq)

    def attempt_recorded(self, seq: int, attempt: int) -> bool:
        """Whether history records that attempt ``attempt`` of activity ``seq`` failed."""
        return (seq, attempt) in self._attempts

    def step(self) -> Decision:
        """Apply what history answers and return what the workflow needs next.

        Raises:
            NonDeterminismError: the code yielded something other than what
                history recorded, or more or fewer commands.
        """
        with in_workflow(self._state):
            return self._step()

    def _step(self) -> Decision:
        if self._gen is None and self._outcome is None:
            self._gen = self._func(*self._args, **self._kwargs)
            self._resume(functools.partial(self._gen.send, None), replaying=self._last_command_index >= 0)
        scheduled, answers = self._scheduled, self._answers
        while self._outcome is None:
            node = self._pending
            assert node is not None
            command = node.command
            if type(command) is ActivityCall and not self._cancels:
                self._fast_forward(node)
                if self._pending is not node:
                    continue  # it made progress
            if self._runs:  # what follows reads history at these seqs: as real events
                self._unpack_at(leaf.seq for leaf in node.leaves())
            if node.seq >= 0 and type(command) is not WaitSignal:
                # The common case, kept short: one activity, timer, child or value.
                seq = node.seq
                recorded = scheduled.get(seq)
                if recorded is not None and not self._cancels:
                    if recorded.kind != command.kind or recorded.name != command.name:  # type: ignore[attr-defined]
                        self._match(seq, command, recorded)
                    found = answers.get(seq)
                    if found is None:
                        return Decision("wait", waiting=(seq,))
                    index, event = found
                    del scheduled[seq]
                    del answers[seq]
                    self._pending = None
                    gen = self._gen
                    assert gen is not None
                    if type(event) is ActivityCompleted:
                        action = functools.partial(gen.send, event.result)
                    else:
                        ok, value = self._outcome_of(seq, event, recorded)
                        action = functools.partial(gen.send if ok else gen.throw, value)
                    self._resume(action, replaying=index < self._last_command_index)
                    continue
            leaves = list(node.leaves())
            new: list[tuple[int, Command]] = []
            for leaf in leaves:
                recorded = scheduled.get(leaf.seq)
                if recorded is None:
                    new.append((leaf.seq, leaf.command))
                else:
                    self._match(leaf.seq, leaf.command, recorded)
            if new:
                if self._terminal is not None:
                    seq, command = new[0]
                    raise NonDeterminismError(
                        f"{self._what()} is not deterministic at sequence {seq}: history recorded that the "
                        f"workflow ended there, but the code now yields {command.describe()}. {FIX_HINT}"
                    )
                if self._cancels:  # cancelled before these were recorded: they never will be
                    self._cancel(leaves)
                    continue
                return Decision("schedule", new=tuple(new))
            answer = self._answer(node, {})
            if self._cancels and (answer is None or self._cancels[0] < answer.index):
                self._cancel(leaves)
                continue
            if answer is None:
                return Decision("wait", waiting=tuple(leaf.seq for leaf in leaves))
            self._consume(answer, leaves)
            gen = self._gen
            assert gen is not None
            action = functools.partial(gen.send if answer.ok else gen.throw, answer.value)
            self._resume(action, replaying=answer.index < self._last_command_index)
        return self._finish(self._outcome)

    # -- answering ---------------------------------------------------------------
    def _answer(self, node: _Node, cursor: dict[str, int]) -> _Answer | None:
        """The earliest-in-history answer to ``node``, or None; ``cursor`` tracks signals
        tentatively taken by earlier leaves of the same composite."""
        command = node.command
        if isinstance(command, AllOf):
            answers = [self._answer(child, cursor) for child in node.children]
            failures = [a for a in answers if a is not None and not a.ok]
            if failures:
                first = min(failures, key=lambda a: a.index)
                taken = [s for a in answers if a is not None and a.index <= first.index for s in a.signals]
                return _Answer(first.index, False, first.value, taken)
            if any(a is None for a in answers):
                return None
            done = [a for a in answers if a is not None]
            return _Answer(max(a.index for a in done), True, [a.value for a in done],
                           [s for a in done for s in a.signals])
        if isinstance(command, AnyOf):
            answers = [self._answer(child, cursor) for child in node.children]
            ready = [(a.index, i, a) for i, a in enumerate(answers) if a is not None]
            if not ready:
                return None
            index, position, first = min(ready, key=lambda item: (item[0], item[1]))
            value = (position, first.value) if first.ok else first.value
            return _Answer(index, first.ok, value, first.signals)
        if isinstance(command, WaitSignal):
            queue = self._signals.get(command.signal, [])
            position = cursor.get(command.signal, 0)
            timeout = self._answers.get(node.seq)
            if position < len(queue) and (timeout is None or queue[position][0] < timeout[0]):
                cursor[command.signal] = position + 1
                index, payload = queue[position]
                return _Answer(index, True, payload, [(command.signal, index)])
            return _Answer(timeout[0], True, None) if timeout is not None else None
        found = self._answers.get(node.seq)
        if found is None:
            return None
        index, event = found
        ok, value = self._outcome_of(node.seq, event)
        return _Answer(index, ok, value)

    def _outcome_of(self, seq: int, event: Event, recorded: Event | None = None) -> tuple[bool, Any]:
        if isinstance(event, ActivityCompleted):
            return True, event.result
        if isinstance(event, ActivityFailedEvent):
            info = event.error_info()
            activity = getattr(recorded or self._scheduled.get(seq), "activity", "?")
            return False, ActivityFailed(activity, info.type, info.message, info.traceback, info.exception,
                                         event.attempt)
        if isinstance(event, ChildCompleted):
            return True, event.result
        if isinstance(event, ChildFailed):
            info = event.error_info()
            return False, WorkflowFailed(event.workflow_id, info.type, info.message, info.traceback)
        if isinstance(event, ValueRecorded):
            if event.error is not None:
                info = ErrorInfo.from_dict(event.error)
                return False, info.exception or RuntimeError(f"{event.what} raised {info.type}: {info.message}")
            return True, event.value
        if isinstance(event, MarkerRecorded):
            return True, True
        if isinstance(event, TimerFired):
            return True, None
        raise TypeError(f"cannot answer a command with {type(event).__name__}")  # pragma: no cover

    def _consume(self, answer: _Answer, leaves: list[_Node]) -> None:
        for name, index in answer.signals:
            self._signals[name] = [item for item in self._signals[name] if item[0] != index]
        self._drop(leaves)

    def _drop(self, leaves: list[_Node]) -> None:
        """Forget the leaves the generator no longer waits on (answered, lost a race, cancelled)."""
        for leaf in leaves:
            self._scheduled.pop(leaf.seq, None)
            self._answers.pop(leaf.seq, None)
        self._pending = None

    def _cancel(self, leaves: list[_Node]) -> None:
        replaying = self._cancels[0] < self._last_command_index
        self._drop(leaves)
        gen = self._gen
        assert gen is not None
        self._resume(functools.partial(gen.throw, self._take_cancel()), replaying=replaying)

    def _take_cancel(self) -> Cancelled:
        self._cancels.popleft()
        return Cancelled(f"workflow {self._workflow_id!r} was cancelled")

    # -- running workflow code -----------------------------------------------------
    def _resume(self, action: Callable[[], Any] | None, *, replaying: bool) -> None:
        """Run workflow code until its next yield, and note what it asked for."""
        self._state.is_replaying = replaying
        while action is not None:
            try:
                value = action()
            except StopIteration as stop:
                self._outcome = Decision("complete", result=stop.value)
                return
            except Exception as exc:
                self._outcome = ended_by(exc)
                return
            action = self._accept(value)

    def _accept(self, value: Any) -> Callable[[], Any] | None:
        """Note what the generator yielded: None when it now waits on a command, else
        what resumes it at once (an answer known without history, or an error for a bad yield)."""
        gen = self._gen
        assert gen is not None
        kind = type(value)
        if kind in _LEAVES:
            self._pending = _Node(value, seq=self._next_seq)
            self._next_seq += 1
            return None
        if kind is ContinueAsNew:
            if self._cancels:  # a cancel recorded before it: it must not pass to the next run
                return functools.partial(gen.throw, self._take_cancel())
            self._outcome = Decision("continue", args=value.args, kwargs=value.kwargs)
            return None
        if kind is Patched and self._patch_predates(value):
            return functools.partial(gen.send, False)
        if kind is AllOf and not value.children:
            return functools.partial(gen.send, [])
        if isinstance(value, Command):
            self._pending = self._build(value)
            return None
        bad = TypeError(
            f"a workflow may only yield durable commands (an activity call, durable.sleep(...), ...), "
            f"not {type(value).__name__}: {value!r:.80}"
        )
        return functools.partial(gen.throw, bad)  # thrown at the offending yield

    def _fast_forward(self, node: _Node) -> None:
        """Replay a run of recorded, completed activities with none of the general checks.

        Most of a long history is activity after activity, each answered by its
        completion; this loop sends each recorded result straight into the
        generator while that holds. Anything else (a mismatch, a failure, a
        timer, a cancel) leaves the node pending for the general walk, which
        also reports the mismatch.
        """
        scheduled, answers, state, gen = self._scheduled, self._answers, self._state, self._gen
        assert gen is not None
        last, runs = self._last_command_index, self._runs
        seq, command = node.seq, node.command
        while True:
            if seq in runs:  # a compact run of them starts here
                went = self._forward_run(seq, command)
                if went is None:
                    return
                seq, command, more = went
                if more:
                    continue
                break
            recorded = scheduled.get(seq)
            if type(recorded) is not ActivityScheduled or recorded.activity != command.activity:  # type: ignore[union-attr,attr-defined]
                break
            found = answers.get(seq)
            if found is None or type(found[1]) is not ActivityCompleted:
                break
            del scheduled[seq]
            del answers[seq]
            self._pending = None
            state.is_replaying = found[0] < last
            try:
                value = gen.send(found[1].result)  # type: ignore[union-attr]
            except StopIteration as stop:
                self._outcome = Decision("complete", result=stop.value)
                return
            except Exception as exc:
                self._outcome = ended_by(exc)
                return
            if type(value) is not ActivityCall:
                self._resume(self._accept(value), replaying=state.is_replaying)
                return
            seq, command = self._next_seq, value
            self._next_seq = seq + 1
        if self._pending is None:
            self._pending = _Node(command, seq=seq)

    def _patch_predates(self, command: Patched) -> bool:
        """True when history at this point was recorded by code without the patch."""
        self._unpack_at((self._next_seq,))
        recorded = self._scheduled.get(self._next_seq)
        if isinstance(recorded, MarkerRecorded) and recorded.change_id == command.change_id:
            return False
        return recorded is not None or self._terminal is not None

    def _build(self, command: Command) -> _Node:
        if isinstance(command, (AllOf, AnyOf)):
            return _Node(command, children=[self._build(child) for child in command.children])
        node = _Node(command, seq=self._next_seq)
        self._next_seq += 1
        return node

    # -- checks --------------------------------------------------------------------------
    def _what(self) -> str:
        return f"workflow {self._name!r} ({self._workflow_id})"

    def _match(self, seq: int, command: Command, recorded: Event) -> None:
        check_match(self._what(), seq, command, recorded)

    def _finish(self, outcome: Decision) -> Decision:
        """Check that history has nothing the finished code never reached, and the same ending."""
        self._unpack_all()
        return check_ending(self._what(), self._scheduled, self._terminal, outcome)
