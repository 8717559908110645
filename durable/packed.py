"""Compact history: runs of completed activities kept as two columns, not as event objects.

Why: most of a long history is ``(ActivityScheduled k, ActivityCompleted k)``
pairs, and a cold load that builds two frozen event objects per activity (in the
unpickler or after it) spends more time on them than the whole replay does. A
replay of such a pair needs only the activity's name (to check the code still
calls it) and its result (to send); the rest (times, arguments, options,
attempts) is read only by inspection or to report a mismatch.

So a packed block (``serialization.pack_events``, format 2) stores each run of
adjacent pairs with consecutive sequence numbers as a ``PairRun``: the names and
the results as lists, everything else as one nested pickle that is decoded only
when someone asks for the events. Other events stay events. ``History`` is what
a cold load returns: a read-only sequence of events that builds them the first
time it is iterated or indexed, and that ``Replayer.feed`` consumes without
building them (``replay_packed``).

Pure: no Redis. A block is always a copy of entries that stay in the history
list; nothing here is the record.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from .errors import SerializationError
from .events import ActivityCompleted, ActivityScheduled, Event, from_dict, to_dict

__all__ = ["PairRun", "History", "Part", "encode_block", "decode_block", "from_dicts"]

# Kept by the columns themselves; the nested pickle holds the other fields of each event.
_SCHEDULED_OWN = ("seq", "activity", "v", "type")
_COMPLETED_OWN = ("seq", "result", "v", "type")


_SCHEDULED, _COMPLETED = ActivityScheduled.type, ActivityCompleted.type


class PairRun:
    """``len(activities)`` completed activities in a row: pair ``j`` is ``ActivityScheduled``
    at history position ``index + 2j`` and its ``ActivityCompleted`` right after it, both
    at sequence ``seq + j``, calling ``activities[j]`` and answered with ``results[j]``."""

    __slots__ = ("index", "seq", "activities", "results", "_rest", "_events")

    def __init__(self, index: int, seq: int, activities: list[str], results: list[Any],
                 rest: bytes | list[dict[str, Any]]) -> None:
        self.index = index
        self.seq = seq
        self.activities = activities
        self.results = results
        # From a block: pickled (scheduled field names, rows, completed field names, rows);
        # from the history list: the stored dict of each event.
        self._rest = rest
        self._events: list[Event] | None = None

    def __len__(self) -> int:
        return 2 * len(self.activities)

    def events(self) -> list[Event]:
        """The run's events, built once: equal to decoding the entries it copies."""
        if self._events is None:
            rest = self._rest
            self._events = [from_dict(data) for data in rest] if isinstance(rest, list) else self._unpickle(rest)
        return self._events

    def _unpickle(self, rest: bytes) -> list[Event]:
        try:
            scheduled_names, scheduled_rows, completed_names, completed_rows = pickle.loads(rest)
        except Exception as exc:  # the block's signature was checked when it was loaded
            raise SerializationError(
                f"cannot deserialize the events of packed history at position {self.index}: "
                f"{type(exc).__name__}: {exc}. Is a class it refers to missing from this worker's code?"
            ) from exc
        out: list[Event] = []
        seq = self.seq
        for activity, result, scheduled, completed in zip(self.activities, self.results, scheduled_rows,
                                                          completed_rows, strict=True):
            fields = dict(zip(scheduled_names, scheduled, strict=True))
            fields.update(type=ActivityScheduled.type, seq=seq, activity=activity)
            out.append(from_dict(fields))
            fields = dict(zip(completed_names, completed, strict=True))
            fields.update(type=ActivityCompleted.type, seq=seq, result=result)
            out.append(from_dict(fields))
            seq += 1
        return out


Part = PairRun | list[Event]


class History(Sequence[Event]):
    """A run's history as a cold load returns it: parts in history order, each a list of
    events or a ``PairRun``. Reading it as a sequence builds every event once; the
    replay engine reads the parts instead."""

    __slots__ = ("parts", "_length", "_events")

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts: tuple[Part, ...] = tuple(parts)
        self._length = sum(len(part) for part in self.parts)
        self._events: list[Event] | None = None

    def events(self) -> list[Event]:
        if self._events is None:
            out: list[Event] = []
            for part in self.parts:
                out += part.events() if isinstance(part, PairRun) else part
            self._events = out
        return self._events

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        return self.events()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self.events() == other.events()
        if isinstance(other, (list, tuple)):
            return self.events() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        runs = sum(1 for part in self.parts if isinstance(part, PairRun))
        return f"<History of {self._length} events, {runs} compact runs>"


def _pairs(kinds: Sequence[Any], seqs: Sequence[Any]) -> Iterator[tuple[int, int]]:
    """(position, count) of each stretch of adjacent completed pairs with consecutive seqs,
    given each entry's type name and seq (of events or of their stored dicts alike)."""
    i, size = 0, len(kinds)
    while i < size - 1:
        count = 0
        start = i
        while (i < size - 1 and kinds[i] == _SCHEDULED and kinds[i + 1] == _COMPLETED
               and seqs[i] == seqs[i + 1] == seqs[start] + count):
            count += 1
            i += 2
        if count:
            yield start, count
        else:
            i += 1


def encode_block(events: Sequence[Event], dumps: Callable[[Any], bytes]) -> list[Any]:
    """The parts of a packed block, as plain values for its pickle: ``(0, event dicts)`` for
    events kept as events, ``(1, seq, activities, results, rest)`` for a ``PairRun``
    (``rest`` pickled by ``dumps``). Equal names, options and empty kwargs are shared,
    so the pickle memo stores them once."""
    parts: list[Any] = []
    shared: dict[Any, Any] = {}
    position = 0

    def plain(upto: int) -> None:
        if upto > position:
            parts.append((0, [to_dict(event) for event in events[position:upto]]))

    for start, count in _pairs([event.type for event in events], [event.seq for event in events]):
        plain(start)
        pairs = events[start:start + 2 * count]
        scheduled = [to_dict(event) for event in pairs[::2]]
        completed = [to_dict(event) for event in pairs[1::2]]
        scheduled_names = tuple(k for k in scheduled[0] if k not in _SCHEDULED_OWN)
        completed_names = tuple(k for k in completed[0] if k not in _COMPLETED_OWN)
        rows = [tuple(_share(shared, data[k]) for k in scheduled_names) for data in scheduled]
        answers = [tuple(_share(shared, data[k]) for k in completed_names) for data in completed]
        rest = dumps((scheduled_names, rows, completed_names, answers))
        parts.append((1, pairs[0].seq, [shared.setdefault(d["activity"], d["activity"]) for d in scheduled],
                      [d["result"] for d in completed], rest))
        position = start + 2 * count
    plain(len(events))
    return parts


def _share(shared: dict[Any, Any], value: Any) -> Any:
    if type(value) is dict:  # options and kwargs: one object per distinct value
        try:
            key = ("dict", repr(value))
        except Exception:
            return value
        return shared.setdefault(key, value)
    return value


def decode_block(parts: list[Any], first: int) -> tuple[list[Part], int]:
    """The parts of a block written by ``encode_block`` whose first event is at history
    position ``first``, and how many events they hold."""
    out: list[Part] = []
    index = first
    for part in parts:
        if part[0] == 1:
            _, seq, activities, results, rest = part
            run = PairRun(index, seq, activities, results, rest)
            out.append(run)
            index += len(run)
        else:
            events = [from_dict(data) for data in part[1]]
            out.append(events)
            index += len(events)
    return out, index - first


def from_dicts(items: list[dict[str, Any]], first: int) -> list[Part]:
    """The parts of history entries as stored (dicts), the first at history position ``first``:
    runs of completed activities as ``PairRun`` (their dicts decoded only when read), the
    other entries decoded to events. A cold load's entries after the packed blocks."""
    parts: list[Part] = []
    position = 0

    def plain(upto: int) -> None:
        if upto > position:
            parts.append([from_dict(data) for data in items[position:upto]])

    for start, count in _pairs([data.get("type") for data in items], [data.get("seq", -1) for data in items]):
        plain(start)
        run = items[start:start + 2 * count]
        parts.append(PairRun(first + start, run[0].get("seq", -1), [data.get("activity", "") for data in run[::2]],
                             [data.get("result") for data in run[1::2]], run))
        position = start + 2 * count
    plain(len(items))
    return parts
