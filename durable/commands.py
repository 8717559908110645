"""Commands: what workflow code asks the kernel for, by yielding them.

A command is an immutable request (``ActivityCall``, ``StartTimer``). It is not
an event: events (``durable.events``) record what happened. The replay engine
matches the two by sequence number, comparing ``kind`` and ``name``, so every
command exposes both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

__all__ = [
    "RetryPolicy",
    "Limit",
    "ActivityOptions",
    "Command",
    "ActivityCall",
    "StartTimer",
    "WaitSignal",
    "StartChild",
    "RecordValue",
    "Patched",
    "ContinueAsNew",
    "AllOf",
    "AnyOf",
    "sleep",
    "sleep_until",
    "wait_signal",
    "all_of",
    "any_of",
    "now",
    "uuid4",
    "random",
    "side_effect",
    "patched",
    "continue_as_new",
]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing activity is retried.

    The wait before attempt ``n + 1`` is ``initial_interval * backoff ** (n - 1)``
    seconds, capped at ``max_interval``. Waits are durable: the retry is a job
    scheduled in Redis, so a worker restart does not lose or shorten it.

    Attributes:
        max_attempts: total attempts including the first; ``0`` means no limit.
        non_retryable: exception types (or their qualified names) that fail
            the activity at once.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ValueError("RetryPolicy.max_attempts must be >= 0 (0 means retry without limit)")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ValueError("RetryPolicy intervals must be >= 0 seconds")
        if self.backoff < 1:
            raise ValueError("RetryPolicy.backoff must be >= 1.0 (1.0 waits the same interval every time)")
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)

    def allows_retry(self, attempt: int, exc_type_name: str, exc: BaseException | None) -> bool:
        """Whether another attempt follows failed attempt ``attempt``."""
        if self.max_attempts and attempt >= self.max_attempts:
            return False
        for item in self.non_retryable:
            if isinstance(item, str):
                if item in (exc_type_name, exc_type_name.rsplit(".", 1)[-1]):
                    return False
            elif exc is not None and isinstance(exc, item):
                return False
        return True


_LIMIT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,99}")


@dataclass(frozen=True)
class Limit:
    """A limit that every worker obeys together, for the activities that name it.

    ``Limit("slack", concurrency=2, rate=1)``: at most 2 attempts running at
    once, and attempts start at least ``per / rate`` seconds apart (here 1 s:
    starts are spread evenly, never bunched into bursts). The state lives in
    Redis, so the limit holds across worker processes, hosts and restarts.
    An attempt that finds the limit full does not wait in the worker: it is
    scheduled again (when the next start is allowed, or after a short pause
    when every slot is taken), as the same attempt, so waiting never uses up
    a retry. A worker that dies holding a slot gives it back when its lease
    lapses.

    Activities share a limit by its name: give every activity of the
    ``slack`` queue the same ``Limit`` for a per-queue limit. The settings are
    read from the code on the worker that runs the attempt, not stored with
    the workflow, so a deploy that changes them applies to what is waiting.

    Attributes:
        name: what the limit is called in Redis; one name, one setting.
        concurrency: attempts running at once, at most; ``None`` for no cap.
        rate: attempt starts per ``per`` seconds, at most; ``None`` for no cap.
        per: the period ``rate`` counts over, in seconds.
    """

    name: str
    _: KW_ONLY
    concurrency: int | None = None
    rate: float | None = None
    per: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _LIMIT_NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"invalid limit name {self.name!r}: use 1-100 letters, digits and ._:@/+=- starting with a "
                "letter or digit (e.g. 'slack')"
            )
        if self.concurrency is None and self.rate is None:
            raise ValueError(
                f"durable.Limit({self.name!r}) limits nothing: give concurrency= (attempts at once), "
                "rate= (starts per `per` seconds), or both"
            )
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise ValueError(f"durable.Limit({self.name!r}): concurrency must be a whole number >= 1, "
                             f"not {self.concurrency!r}")
        for what, value in (("rate", self.rate), ("per", self.per)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ValueError(f"durable.Limit({self.name!r}): {what} must be a positive number, not {value!r}")

    @property
    def interval(self) -> float:
        """Seconds between two starts (``per / rate``); 0.0 without a rate."""
        return self.per / self.rate if self.rate is not None else 0.0


@dataclass(frozen=True)
class ActivityOptions:
    """Per-activity settings; ``None`` fields fall back to the workflow's defaults."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    queue: str | None = None
    inline: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and not (self.timeout > 0):
            raise ValueError("an activity timeout must be a positive number of seconds, or None for no limit")


class Command:
    """Base of everything a workflow may yield."""

    kind: ClassVar[str] = "command"

    @property
    def name(self) -> str:
        return self.kind

    def describe(self) -> str:
        """Short text for error messages and history listings."""
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class ActivityCall(Command):
    """Run the activity registered as ``activity`` with these arguments."""

    kind: ClassVar[str] = "activity"
    activity: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: ActivityOptions

    @property
    def name(self) -> str:
        return self.activity

    def with_options(self, **changes: Any) -> ActivityCall:
        return replace(self, options=replace(self.options, **changes))

    @classmethod
    def make(
        cls, activity: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: ActivityOptions
    ) -> ActivityCall:
        """The same as the constructor, without the frozen dataclass's per-field
        ``object.__setattr__``: every replayed activity call builds one."""
        call = object.__new__(cls)
        call.__dict__.update(activity=activity, args=args, kwargs=kwargs, options=options)
        return call


@dataclass(frozen=True)
class StartTimer(Command):
    """Resume the workflow once ``seconds`` have passed (``until`` for an absolute time).

    The deadline is fixed when the command is first recorded, never on replay,
    so a replay after a restart waits only for what was left.
    """

    kind: ClassVar[str] = "timer"
    seconds: float | None = None
    until: float | None = None

    def deadline(self, now: float) -> float:
        return self.until if self.until is not None else now + (self.seconds or 0.0)


def sleep(duration: float | timedelta) -> StartTimer:
    """Durable sleep: ``yield durable.sleep(3600)`` resumes an hour later, restarts or not."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if not isinstance(seconds, (int, float)) or math.isnan(seconds) or math.isinf(seconds):
        raise TypeError(f"durable.sleep takes seconds (int or float) or a timedelta, not {duration!r}")
    return StartTimer(seconds=max(0.0, float(seconds)))


def sleep_until(when: datetime) -> StartTimer:
    """Durable sleep until a timezone-aware ``datetime``."""
    if not isinstance(when, datetime):
        raise TypeError(f"durable.sleep_until takes a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            "durable.sleep_until needs a timezone-aware datetime (e.g. datetime(..., tzinfo=timezone.utc)); "
            "a naive one is ambiguous across workers in different time zones"
        )
    return StartTimer(until=when.timestamp())


@dataclass(frozen=True)
class WaitSignal(Command):
    """Resume with the payload of the next signal ``signal``, or ``None`` after ``timeout`` seconds."""

    kind: ClassVar[str] = "signal"
    signal: str
    timeout: float | None = None

    @property
    def name(self) -> str:
        return self.signal


@dataclass(frozen=True)
class StartChild(Command):
    """Run the workflow registered at ``workflow`` as a child; resume with its result."""

    kind: ClassVar[str] = "child"
    workflow: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    workflow_id: str | None = None
    queue: str | None = None

    @property
    def name(self) -> str:
        return self.workflow


@dataclass(frozen=True)
class RecordValue(Command):
    """A value computed once in the worker (``now``, ``uuid4``, ``random``, ``side_effect``)
    and replayed from history ever after."""

    kind: ClassVar[str] = "value"
    what: str
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.what


@dataclass(frozen=True)
class Patched(Command):
    """``True`` on code paths that reach it live, ``False`` when replaying older history."""

    kind: ClassVar[str] = "patch"
    change_id: str

    @property
    def name(self) -> str:
        return self.change_id


@dataclass(frozen=True)
class ContinueAsNew(Command):
    """End this run and start a fresh one of the same workflow id with these arguments."""

    kind: ClassVar[str] = "continue"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


WAITABLE = (ActivityCall, StartTimer, WaitSignal, StartChild)


def _check_children(what: str, commands: tuple[Any, ...]) -> tuple[Command, ...]:
    for command in commands:
        if not isinstance(command, (*WAITABLE, AllOf, AnyOf)):
            raise TypeError(
                f"durable.{what}() takes activity calls, child workflows, durable.sleep(...), "
                f"durable.wait_signal(...) or nested all_of/any_of, not {command!r:.80}"
            )
    return commands


@dataclass(frozen=True)
class AllOf(Command):
    """Resume when every child is done, with their results in argument order; the
    first child to fail (in history order) raises at the ``yield``."""

    kind: ClassVar[str] = "all_of"
    children: tuple[Command, ...]


@dataclass(frozen=True)
class AnyOf(Command):
    """Resume with ``(index, result)`` of the first child to finish (in history order)."""

    kind: ClassVar[str] = "any_of"
    children: tuple[Command, ...]


def wait_signal(name: str, timeout: float | timedelta | None = None) -> WaitSignal:
    """Wait for the next signal ``name`` (buffered if it came earlier); ``None`` on timeout."""
    if not isinstance(name, str) or not name:
        raise TypeError("durable.wait_signal needs a signal name (a non-empty string)")
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0 or math.isnan(seconds)):
        raise ValueError(f"durable.wait_signal timeout must be >= 0 seconds or None, not {timeout!r}")
    return WaitSignal(name, None if seconds is None else float(seconds))


def all_of(*commands: Command) -> AllOf:
    """Fan out: run the commands concurrently; ``yield`` returns the list of their results."""
    return AllOf(_check_children("all_of", commands))


def any_of(*commands: Command) -> AnyOf:
    """Race: ``yield`` returns ``(index, result)`` of the first command to finish."""
    if not commands:
        raise ValueError("durable.any_of() needs at least one command to wait for")
    return AnyOf(_check_children("any_of", commands))


def now() -> RecordValue:
    """``yield durable.now()``: the current UTC time as an aware datetime, fixed at first execution."""
    return RecordValue("now")


def uuid4() -> RecordValue:
    """``yield durable.uuid4()``: a random UUID, fixed at first execution."""
    return RecordValue("uuid4")


def random() -> RecordValue:
    """``yield durable.random()``: a float in [0, 1), fixed at first execution."""
    return RecordValue("random")


def side_effect(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> RecordValue:
    """``yield durable.side_effect(fn, ...)``: ``fn``'s result, computed once in the worker and
    replayed after. For quick, local, non-failing reads; anything that can fail belongs in an activity."""
    if not callable(fn):
        raise TypeError(f"durable.side_effect takes a callable, not {fn!r:.80}")
    return RecordValue(f"side_effect:{getattr(fn, '__qualname__', type(fn).__name__)}", fn, args, kwargs)


def patched(change_id: str) -> Patched:
    """``if (yield durable.patched("id")):`` new code; ``else:`` the old code, for runs recorded before it."""
    if not isinstance(change_id, str) or not change_id:
        raise TypeError("durable.patched needs a change id (a non-empty string)")
    return Patched(change_id)


def continue_as_new(*args: Any, **kwargs: Any) -> ContinueAsNew:
    """``yield durable.continue_as_new(...)``: restart this workflow id with new arguments and an
    empty history (the way to loop forever in bounded memory)."""
    return ContinueAsNew(args, kwargs)
