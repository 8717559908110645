"""Running one attempt of an activity, and turning its outcome into events.

Shared by inline activities (run inside the step that reached them) and
queued ones (their own RQ job), so both obey the same timeout, retry and
serialization rules.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import clock, observability
from .commands import RecordValue
from .context import ActivityInfo, in_activity
from .errors import ActivityTimeout, PayloadTooLarge, SerializationError
from .events import (
    ActivityCompleted,
    ActivityFailedEvent,
    ActivityRetrying,
    ActivityScheduled,
    ErrorInfo,
    Event,
    ValueRecorded,
)
from .registry import resolve
from .serialization import dumps

__all__ = ["AttemptOutcome", "run_attempt", "deadline", "MISSING_CODE_RETRY"]

MISSING_CODE_RETRY = 30.0  # seconds between tries of an activity no worker could import
_NO_DEADLINE = nullcontext()
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})  # skips the ABC check


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt produced: events to record and, when retrying, when to retry."""

    events: list[Event] = field(default_factory=list)
    retry_at: float | None = None
    missing_code: str | None = None  # the activity could not be imported here: same attempt, later
    limited: str | None = None  # its durable.Limit did not let it start (why): same attempt, later

    @property
    def resolved(self) -> bool:
        return self.retry_at is None


@contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Raise ``ActivityTimeout`` in the running code after ``seconds``.

    Uses SIGALRM, which only the main thread can receive; RQ's SimpleWorker
    runs jobs there. Elsewhere (a thread of the caller's) the limit cannot be
    enforced and the code runs without it.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise ActivityTimeout(f"{what} did not finish within its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # give an enclosing alarm back what remains of it
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_delay - (time.monotonic() - started)))


def run_attempt(scheduled: ActivityScheduled, info: ActivityInfo, now: float | None = None) -> AttemptOutcome:
    """Run attempt ``info.attempt`` of the activity ``scheduled`` recorded; never raises for
    the activity's own errors, which become events. Logged and traced as one attempt."""
    with observability.AttemptScope(info) as observed:
        return observed.ended(_run_attempt(scheduled, info, now))


def _run_attempt(scheduled: ActivityScheduled, info: ActivityInfo, now: float | None) -> AttemptOutcome:
    options = scheduled.activity_options()
    seq, attempt = scheduled.seq, info.attempt
    try:
        target = resolve(scheduled.activity)
    except ImportError as exc:
        # Not a failed attempt: this worker lacks the code (a deploy half done?). Try the
        # same attempt again later, on whichever worker takes it.
        retry_at = (clock.now() if now is None else now) + MISSING_CODE_RETRY
        return AttemptOutcome([], retry_at=retry_at, missing_code=str(exc))
    try:
        func = getattr(target, "func", target)
        limit = deadline(options.timeout, f"activity {scheduled.activity}") if options.timeout else _NO_DEADLINE
        with in_activity(info), limit:
            result = func(*scheduled.args, **scheduled.kwargs)
            if type(result) not in _NOT_AWAITABLE and inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        dumps(result, f"the result of activity {scheduled.activity}")  # fail here, not at commit
    except Exception as exc:
        error = ErrorInfo.from_exception(exc)
        finished = clock.now() if now is None else now
        # A result that cannot be stored fails the same way on every attempt: do not retry it.
        storable = not isinstance(exc, (SerializationError, PayloadTooLarge))
        retryable = storable and options.retry.allows_retry(attempt, error.type, exc)
        if retryable:
            retry_at = finished + options.retry.delay(attempt)
            event: Event = ActivityRetrying(
                seq=seq, time=finished, attempt=attempt, error=_summary(error), retry_at=retry_at
            )
            return AttemptOutcome([event], retry_at=retry_at)
        return AttemptOutcome([ActivityFailedEvent(seq=seq, time=finished, error=error.to_dict(), attempt=attempt)])
    return AttemptOutcome([ActivityCompleted(seq=seq, time=clock.now() if now is None else now, result=result,
                                             attempt=attempt)])


async def _await(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]


def _summary(error: ErrorInfo) -> dict[str, object]:
    """A retry record keeps text only: the exception object matters only for the last attempt."""
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def record_value(seq: int, command: RecordValue, now: float) -> ValueRecorded:
    """The event recording a ``durable.now()``/``uuid4()``/``random()``/``side_effect()``
    value, computed once, here, when first reached; replays read it from history. An
    error (or a value that cannot be stored) is recorded too, and raised at the yield."""
    try:
        if command.what == "now":
            value: Any = datetime.fromtimestamp(now, UTC)
        elif command.what == "uuid4":
            value = uuid.uuid4()
        elif command.what == "random":
            value = _random.random()
        else:
            assert command.fn is not None
            value = command.fn(*command.args, **command.kwargs)
        dumps(value, f"the value of {command.what}")
        return ValueRecorded(seq=seq, time=now, what=command.what, value=value)
    except Exception as exc:
        error = ErrorInfo.from_exception(exc).to_dict()
        return ValueRecorded(seq=seq, time=now, what=command.what, error=error)
