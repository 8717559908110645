"""Events: what happened to a workflow, as recorded in its history.

History is a contract: once written, an event must decode under every later
version of durable. So each event is stored as a plain dict carrying a format
version ``v`` and a ``type`` tag; decoding ignores fields it does not know and
fills fields it lacks with their defaults. Adding a field is therefore safe;
renaming or removing one is not (add a new ``type`` instead).
"""

from __future__ import annotations

import dataclasses
import os
import traceback as tb
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cloudpickle

from .commands import ActivityCall, ActivityOptions, Command, RetryPolicy, StartTimer
from .errors import describe_exception

__all__ = [
    "FORMAT_VERSION",
    "ErrorInfo",
    "Event",
    "ActivityScheduled",
    "ActivityCompleted",
    "ActivityFailedEvent",
    "ActivityRetrying",
    "TimerStarted",
    "TimerFired",
    "WorkflowCompleted",
    "WorkflowFailedEvent",
    "to_dict",
    "from_dict",
    "command_event",
]

FORMAT_VERSION = 1

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as data: readable anywhere, the object kept when it pickles."""

    type: str
    message: str
    traceback: str = ""
    exception: BaseException | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, *, keep_object: bool = True) -> ErrorInfo:
        type_name, message = describe_exception(exc)
        # Start the traceback at the user's code: the kernel's frames above it
        # (replay, activity runner) say nothing to the reader.
        frames = exc.__traceback__
        while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frames = frames.tb_next
        text = "".join(tb.format_exception(type(exc), exc, frames or exc.__traceback__))
        obj: BaseException | None = None
        if keep_object:
            try:
                cloudpickle.loads(cloudpickle.dumps(exc))
                obj = exc
            except Exception:
                obj = None
        return cls(type_name, message, text, obj)

    @classmethod
    def from_dict(cls, data: Any) -> ErrorInfo:
        if isinstance(data, ErrorInfo):
            return data
        data = dict(data or {})
        return cls(
            str(data.get("type", "Exception")),
            str(data.get("message", "")),
            str(data.get("traceback", "")),
            data.get("exception"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback, "exception": self.exception}


@dataclass(frozen=True)
class Event:
    """Base event. ``seq`` ties it to a command; workflow-level events use ``-1``."""

    type: ClassVar[str] = "event"
    resolves: ClassVar[bool] = False  # True for events that answer a command
    schedules: ClassVar[bool] = False  # True for events that record a command
    seq: int = -1
    time: float = 0.0


@dataclass(frozen=True)
class ActivityScheduled(Event):
    type: ClassVar[str] = "activity_scheduled"
    schedules: ClassVar[bool] = True
    activity: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.activity

    kind: ClassVar[str] = "activity"

    def activity_options(self) -> ActivityOptions:
        return options_from_dict(self.options)


@dataclass(frozen=True)
class ActivityCompleted(Event):
    type: ClassVar[str] = "activity_completed"
    resolves: ClassVar[bool] = True
    result: Any = None
    attempt: int = 1


@dataclass(frozen=True)
class ActivityFailedEvent(Event):
    """The activity's last attempt failed; the workflow sees ``ActivityFailed``."""

    type: ClassVar[str] = "activity_failed"
    resolves: ClassVar[bool] = True
    error: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1

    def error_info(self) -> ErrorInfo:
        return ErrorInfo.from_dict(self.error)


@dataclass(frozen=True)
class ActivityRetrying(Event):
    """An attempt failed and another is scheduled; informational for replay."""

    type: ClassVar[str] = "activity_retrying"
    attempt: int = 1
    error: dict[str, Any] = field(default_factory=dict)
    retry_at: float = 0.0


@dataclass(frozen=True)
class TimerStarted(Event):
    type: ClassVar[str] = "timer_started"
    schedules: ClassVar[bool] = True
    kind: ClassVar[str] = "timer"
    fire_at: float = 0.0

    @property
    def name(self) -> str:
        return "timer"


@dataclass(frozen=True)
class TimerFired(Event):
    type: ClassVar[str] = "timer_fired"
    resolves: ClassVar[bool] = True


@dataclass(frozen=True)
class WorkflowCompleted(Event):
    type: ClassVar[str] = "workflow_completed"
    result: Any = None


@dataclass(frozen=True)
class WorkflowFailedEvent(Event):
    type: ClassVar[str] = "workflow_failed"
    error: dict[str, Any] = field(default_factory=dict)

    def error_info(self) -> ErrorInfo:
        return ErrorInfo.from_dict(self.error)


_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        ActivityScheduled,
        ActivityCompleted,
        ActivityFailedEvent,
        ActivityRetrying,
        TimerStarted,
        TimerFired,
        WorkflowCompleted,
        WorkflowFailedEvent,
    )
}


def to_dict(event: Event) -> dict[str, Any]:
    """The stored form of an event: a plain dict with ``v`` and ``type``."""
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    data["v"] = FORMAT_VERSION
    data["type"] = event.type
    return data


def from_dict(data: dict[str, Any]) -> Event:
    """Decode a stored event, tolerating fields added or missing across versions."""
    try:
        cls = _TYPES[data["type"]]
    except KeyError:
        raise ValueError(
            f"unknown history event type {data.get('type')!r} (format v{data.get('v')}); "
            "this history was written by a newer durable: upgrade this worker"
        ) from None
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def options_to_dict(options: ActivityOptions) -> dict[str, Any]:
    return {
        "retry": dataclasses.asdict(options.retry),
        "timeout": options.timeout,
        "queue": options.queue,
        "inline": options.inline,
    }


def options_from_dict(data: dict[str, Any]) -> ActivityOptions:
    retry_fields = {f.name for f in dataclasses.fields(RetryPolicy)}
    retry = RetryPolicy(**{k: v for k, v in dict(data.get("retry") or {}).items() if k in retry_fields})
    return ActivityOptions(
        retry=retry, timeout=data.get("timeout"), queue=data.get("queue"), inline=bool(data.get("inline", False))
    )


def command_event(seq: int, command: Command, now: float) -> Event:
    """The event that records ``command`` as issued at sequence ``seq``."""
    if isinstance(command, ActivityCall):
        return ActivityScheduled(
            seq=seq,
            time=now,
            activity=command.activity,
            args=command.args,
            kwargs=command.kwargs,
            options=options_to_dict(command.options),
        )
    if isinstance(command, StartTimer):
        return TimerStarted(seq=seq, time=now, fire_at=command.deadline(now))
    raise TypeError(f"no event records a {type(command).__name__}")
