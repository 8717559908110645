"""The replay engine's side of compact history (``packed.PairRun``): replaying runs of
completed activities from their two columns, without an event object per event.

Why a side table: building two frozen events per activity costs more than
replaying it, and a cold load of a long history is mostly such runs. So
``Replayer.feed`` keeps a ``PairRun`` as it is, keyed by the sequence number of
its first pair not yet replayed, and ``Replayer._fast_forward`` sends its
results straight into the generator (``_forward_run``).

Everything else in the engine reads ``_scheduled``/``_answers``, and must see
exactly what feeding the real events would have put there. The rule that keeps
that true: before the engine reads them for a sequence number, the run holding
it is turned into real events (``_unpack_at``; ``_unpack_all`` before the
ending checks). That needs no search, because the generator reaches sequence
numbers in order: every run still held starts at or after the first leaf the
generator waits on, so only runs keyed at one of its leaves can hold one (see
``_feed_run`` for why this holds from the start). Feeding events that touch a
held run's numbers, or a run that overlaps what is there, unpacks first too.
So messages, ``is_replaying``, ``open_command`` and ``attempt_recorded`` are
exactly those of a replay of the real events.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from .commands import ActivityCall, Command
from .context import RunState
from .decision import Decision, ended_by
from .events import Event
from .packed import History, PairRun

__all__ = ["PackedReplay"]


class PackedReplay:
    """Compact runs in the replayer: mixed into ``Replayer``."""

    if TYPE_CHECKING:  # provided by Replayer
        _state: RunState
        _gen: Generator[Any, Any, Any] | None
        _scheduled: dict[int, Event]
        _answers: dict[int, tuple[int, Event]]
        _length: int
        _last_command_index: int
        _next_seq: int
        _pending: Any
        _outcome: Decision | None

        def feed(self, events: Iterable[Event]) -> None: ...
        def _resume(self, action: Any, *, replaying: bool) -> None: ...
        def _accept(self, value: Any) -> Any: ...

    _runs: dict[int, tuple[PairRun, int]]  # first seq not yet replayed -> (run, its position there)
    _span: tuple[int, int]  # the seqs of every run held lie in [lo, hi)

    def _feed_history(self, history: History) -> None:
        for part in history.parts:
            if isinstance(part, PairRun):
                self._feed_run(part)
            else:
                self.feed(part)

    def _feed_run(self, run: PairRun) -> None:
        """Hold ``run`` as it is if it can be, else feed its events.

        It can be when the generator has not started (so every run held starts at
        or after any seq it will wait on) and no event or run fed before touches
        its seqs: then feeding its events would only have set ``_scheduled`` and
        ``_answers`` for those seqs, which ``_unpack_at`` does when needed.
        """
        count = len(run.activities)
        lo, hi = run.seq, run.seq + count
        if self._gen is not None or self._length != run.index or (self._runs and lo < self._span[1]) or \
                self._touches(lo, hi):
            self.feed(run.events())
            return
        self._span = (self._span[0], hi) if self._runs else (lo, hi)
        self._runs[lo] = (run, 0)
        self._length += 2 * count
        self._last_command_index = run.index + 2 * count - 2

    def _touches(self, lo: int, hi: int) -> bool:
        scheduled, answers = self._scheduled, self._answers
        if len(scheduled) + len(answers) < hi - lo:
            return any(lo <= seq < hi for seq in scheduled) or any(lo <= seq < hi for seq in answers)
        return any(seq in scheduled or seq in answers for seq in range(lo, hi))

    def _unpack_at(self, seqs: Iterable[int]) -> None:
        """Turn the runs held at ``seqs`` into real events (what is left of them)."""
        runs = self._runs
        for seq in seqs:
            entry = runs.pop(seq, None)
            if entry is not None:
                self._unpack(*entry)

    def _unpack_all(self) -> None:
        for run, position in self._runs.values():
            self._unpack(run, position)
        self._runs.clear()

    def _unpack(self, run: PairRun, position: int) -> None:
        scheduled, answers = self._scheduled, self._answers
        events = run.events()
        index = run.index + 2 * position
        for j in range(position, len(run.activities)):
            recorded, answer = events[2 * j], events[2 * j + 1]
            scheduled[recorded.seq] = recorded
            answers[recorded.seq] = (index + 1, answer)
            index += 2

    def _forward_run(self, seq: int, command: Command) -> tuple[int, Command, bool] | None:
        """Replay the run held at ``seq`` while the code calls what it recorded.

        Returns None when the generator is done with (it ended, or yielded something
        other than an activity, which is then accepted), else where the walk stands
        and whether to go on: True when the run ran out under an activity call,
        False when the code now calls another activity than the run recorded (the
        pair stays held, for the general walk to unpack and report).
        """
        runs, state, gen = self._runs, self._state, self._gen
        assert gen is not None
        run, position = runs.pop(seq)
        activities, results = run.activities, run.results
        end = len(activities)
        answered = run.index + 2 * position + 1  # history position of the answer
        last = self._last_command_index
        while True:
            if activities[position] != command.activity:  # type: ignore[attr-defined]
                runs[seq] = (run, position)
                return seq, command, False
            self._pending = None
            state.is_replaying = answered < last
            position += 1
            try:
                value = gen.send(results[position - 1])
            except StopIteration as stop:
                self._outcome = Decision("complete", result=stop.value)
            except Exception as exc:
                self._outcome = ended_by(exc)
            else:
                if type(value) is ActivityCall:
                    seq, command = self._next_seq, value
                    self._next_seq = seq + 1
                    if position == end:
                        return seq, command, True
                    answered += 2
                    continue
                if position < end:
                    runs[seq + 1] = (run, position)
                self._resume(self._accept(value), replaying=state.is_replaying)
                return None
            if position < end:  # the code ended inside the run: the ending checks report it
                runs[seq + 1] = (run, position)
            return None
