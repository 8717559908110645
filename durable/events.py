"""Events: what happened to a workflow, as recorded in its history.

History is a contract: once written, an event must decode under every later
version of durable. So each event is stored as a plain dict carrying a format
version ``v`` and a ``type`` tag; decoding ignores fields it does not know and
fills fields it lacks with their defaults. Adding a field is therefore safe;
renaming or removing one is not (add a new ``type`` instead).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import traceback as tb
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cloudpickle

from .commands import (
    ActivityCall,
    ActivityOptions,
    Command,
    Patched,
    RetryPolicy,
    StartChild,
    StartTimer,
    WaitSignal,
)
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
    "SignalWaitStarted",
    "SignalReceived",
    "ChildStarted",
    "ChildCompleted",
    "ChildFailed",
    "ValueRecorded",
    "MarkerRecorded",
    "CancelRequested",
    "WorkflowCancelled",
    "WorkflowContinued",
    "TERMINAL_EVENTS",
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
        # Every attempt asks; the dict is usually the one options_to_dict made for the command.
        options = self.options
        hit = _FROM_DICT.get(id(options))
        if hit is not None and hit[0] is options:
            return hit[1]
        value = options_from_dict(options)
        if len(_FROM_DICT) >= 1024:
            _FROM_DICT.clear()
        _FROM_DICT[id(options)] = (options, value)  # keeping the dict keeps its id unique
        return value


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


@dataclass(frozen=True)
class SignalWaitStarted(Event):
    """The workflow waits for signal ``signal``; ``timeout_at`` fires ``timer_fired`` for this seq."""

    type: ClassVar[str] = "signal_wait_started"
    schedules: ClassVar[bool] = True
    kind: ClassVar[str] = "signal"
    signal: str = ""
    timeout_at: float | None = None

    @property
    def name(self) -> str:
        return self.signal

    @property
    def fire_at(self) -> float | None:
        return self.timeout_at


@dataclass(frozen=True)
class SignalReceived(Event):
    """A signal arrived. Its place in history decides which wait receives it."""

    type: ClassVar[str] = "signal_received"
    signal: str = ""
    payload: Any = None


@dataclass(frozen=True)
class ChildStarted(Event):
    type: ClassVar[str] = "child_started"
    schedules: ClassVar[bool] = True
    kind: ClassVar[str] = "child"
    workflow: str = ""
    workflow_id: str = ""

    @property
    def name(self) -> str:
        return self.workflow


@dataclass(frozen=True)
class ChildCompleted(Event):
    type: ClassVar[str] = "child_completed"
    resolves: ClassVar[bool] = True
    workflow_id: str = ""
    parent_run: str = ""
    result: Any = None


@dataclass(frozen=True)
class ChildFailed(Event):
    type: ClassVar[str] = "child_failed"
    resolves: ClassVar[bool] = True
    workflow_id: str = ""
    parent_run: str = ""
    error: dict[str, Any] = field(default_factory=dict)

    def error_info(self) -> ErrorInfo:
        return ErrorInfo.from_dict(self.error)


@dataclass(frozen=True)
class ValueRecorded(Event):
    """``now()``, ``uuid4()``, ``random()`` or ``side_effect()``: recorded and answered at once."""

    type: ClassVar[str] = "value_recorded"
    schedules: ClassVar[bool] = True
    resolves: ClassVar[bool] = True
    kind: ClassVar[str] = "value"
    what: str = ""
    value: Any = None
    error: dict[str, Any] | None = None  # side_effect() raised: re-raised at the yield

    @property
    def name(self) -> str:
        return self.what


@dataclass(frozen=True)
class MarkerRecorded(Event):
    """``patched(change_id)`` reached live: runs recorded from here on take the new path."""

    type: ClassVar[str] = "marker_recorded"
    schedules: ClassVar[bool] = True
    resolves: ClassVar[bool] = True
    kind: ClassVar[str] = "patch"
    change_id: str = ""

    @property
    def name(self) -> str:
        return self.change_id


@dataclass(frozen=True)
class CancelRequested(Event):
    """Someone asked to cancel; ``Cancelled`` is raised at the yield pending at this point."""

    type: ClassVar[str] = "cancel_requested"
    reason: str = ""


@dataclass(frozen=True)
class WorkflowCancelled(Event):
    type: ClassVar[str] = "workflow_cancelled"


@dataclass(frozen=True)
class WorkflowContinued(Event):
    """This run ended with ``continue_as_new``; ``new_run`` goes on with ``args``/``kwargs``."""

    type: ClassVar[str] = "workflow_continued"
    new_run: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


TERMINAL_EVENTS = (WorkflowCompleted, WorkflowFailedEvent, WorkflowCancelled, WorkflowContinued)

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
        SignalWaitStarted,
        SignalReceived,
        ChildStarted,
        ChildCompleted,
        ChildFailed,
        ValueRecorded,
        MarkerRecorded,
        CancelRequested,
        WorkflowCancelled,
        WorkflowContinued,
    )
}


def to_dict(event: Event) -> dict[str, Any]:
    """The stored form of an event: a plain dict with ``v`` and ``type``."""
    names = _FIELD_NAMES.get(type(event))
    if names is None:  # a subclass outside _TYPES: look its fields up (every commit writes events)
        names = _FIELD_NAMES[type(event)] = tuple(f.name for f in dataclasses.fields(event))
    values = event.__dict__
    data = {name: values[name] for name in names}
    data["v"] = FORMAT_VERSION
    data["type"] = event.type
    return data


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _defaults(cls: type[Event]) -> dict[str, Any]:
    """Each field's default, for filling what an older writer did not store."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory  # called per event, below
    return out


_FIELD_DEFAULTS: dict[type[Event], dict[str, Any]] = {cls: _defaults(cls) for cls in _TYPES.values()}
_FACTORIES: dict[type[Event], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING)
    for cls in _TYPES.values()
}


def from_dict(data: dict[str, Any]) -> Event:
    """Decode a stored event, tolerating fields added or missing across versions.

    Replay decodes every event of a cold history, so this builds the frozen
    dataclass directly (defaults first, then the stored fields it knows) instead
    of going through ``__init__``'s per-field ``object.__setattr__``.
    """
    try:
        cls = _TYPES[data["type"]]
    except KeyError:
        raise ValueError(
            f"unknown history event type {data.get('type')!r} (format v{data.get('v')}); "
            "this history was written by a newer durable: upgrade this worker"
        ) from None
    defaults = _FIELD_DEFAULTS[cls]
    values = dict(defaults)
    for name in _FACTORIES[cls]:
        values[name] = defaults[name]()
    for key, value in data.items():
        if key in defaults:
            values[key] = value
    event = object.__new__(cls)
    event.__dict__.update(values)
    return event


def options_to_dict(options: ActivityOptions) -> dict[str, Any]:
    """The stored form of ``options``. An activity's options are fixed at decoration, so each
    is converted once (``asdict`` is slow) and the dict is shared by its events: never
    change it in place."""
    try:
        return _options_dict(options)
    except TypeError:  # unhashable (a list in non_retryable): convert every time
        return _options_dict.__wrapped__(options)


@functools.lru_cache(maxsize=4096)
def _options_dict(options: ActivityOptions) -> dict[str, Any]:
    return {
        "retry": dataclasses.asdict(options.retry),
        "timeout": options.timeout,
        "queue": options.queue,
        "inline": options.inline,
    }


_FROM_DICT: dict[int, tuple[dict[str, Any], ActivityOptions]] = {}
_RETRY_FIELDS = frozenset(f.name for f in dataclasses.fields(RetryPolicy))


def options_from_dict(data: dict[str, Any]) -> ActivityOptions:
    retry_fields = _RETRY_FIELDS
    retry = RetryPolicy(**{k: v for k, v in dict(data.get("retry") or {}).items() if k in retry_fields})
    return ActivityOptions(
        retry=retry, timeout=data.get("timeout"), queue=data.get("queue"), inline=bool(data.get("inline", False))
    )


def command_event(seq: int, command: Command, now: float, *, child_id: str = "") -> Event:
    """The event that records ``command`` as issued at sequence ``seq``.

    Values (``RecordValue``) are computed by the runtime, which builds their
    ``ValueRecorded`` itself; everything else is recorded here.
    """
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
    if isinstance(command, WaitSignal):
        timeout_at = None if command.timeout is None else now + command.timeout
        return SignalWaitStarted(seq=seq, time=now, signal=command.signal, timeout_at=timeout_at)
    if isinstance(command, StartChild):
        return ChildStarted(seq=seq, time=now, workflow=command.workflow, workflow_id=child_id)
    if isinstance(command, Patched):
        return MarkerRecorded(seq=seq, time=now, change_id=command.change_id)
    raise TypeError(f"no event records a {type(command).__name__}")
