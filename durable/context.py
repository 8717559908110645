"""What code running under durable may ask about where it runs.

``workflow_info()`` inside workflow code and ``activity_info()`` inside an
activity read context variables that the replay engine and the runtime set
around the user's code, so the user's functions need no extra parameter.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkflowInfo", "ActivityInfo", "workflow_info", "activity_info", "set_status", "RunState"]


@dataclass(frozen=True)
class WorkflowInfo:
    """Facts about the running workflow, valid between two ``yield``s."""

    workflow_id: str
    run_id: str
    name: str
    is_replaying: bool


@dataclass(frozen=True)
class ActivityInfo:
    """Facts about the running activity attempt.

    ``idempotency_key`` is the same for every attempt and every re-run after a
    crash of this one call site in this run of the workflow, and different for
    every other call: pass it to external APIs so a re-run does not act twice.
    """

    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    activity: str

    @property
    def idempotency_key(self) -> str:
        """``"<workflow id>:<run id>:<seq>"``: stable across retries and re-runs of this call."""
        return f"{self.workflow_id}:{self.run_id}:{self.seq}"


class RunState:
    """The running workflow as its code sees it: ids, whether it replays, its custom status.

    Mutable on purpose: the engine sets it as the context once per step and
    flips ``is_replaying`` per resume, instead of building a context per ``yield``.
    """

    def __init__(self, workflow_id: str = "", run_id: str = "", name: str = "") -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.name = name
        self.is_replaying = False
        self.custom_status: Any = None

    def info(self) -> WorkflowInfo:
        return WorkflowInfo(self.workflow_id, self.run_id, self.name, self.is_replaying)


_run: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("durable_run", default=None)
_activity: contextvars.ContextVar[ActivityInfo | None] = contextvars.ContextVar("durable_activity", default=None)


def workflow_info() -> WorkflowInfo:
    """The running workflow's id, run id, name and whether it is replaying."""
    state = _run.get()
    if state is None:
        raise RuntimeError("durable.workflow_info() is only available inside workflow code run by durable")
    return state.info()


def current_workflow() -> WorkflowInfo | None:
    """The running workflow's info, or None outside workflow code."""
    state = _run.get()
    return state.info() if state is not None else None


def activity_info() -> ActivityInfo:
    """The running activity's workflow id, sequence number, attempt and idempotency key."""
    info = _activity.get()
    if info is None:
        raise RuntimeError("durable.activity_info() is only available inside an activity run by durable")
    return info


def set_status(value: Any) -> None:
    """Publish a small picklable value about the workflow's progress; ``handle.status().custom``
    reports it. Call it from workflow code (not yielded): replay sets it again, deterministically."""
    state = _run.get()
    if state is None:
        raise RuntimeError("durable.set_status() is only available inside workflow code run by durable")
    state.custom_status = value


class _Bound:
    """``var`` set to ``value`` inside a ``with``: a class, not ``@contextmanager``, because
    every replay step and every activity attempt enters one (a third of the cost)."""

    __slots__ = ("_var", "_value", "_token")

    def __init__(self, var: contextvars.ContextVar[Any], value: Any) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


def in_workflow(state: RunState) -> _Bound:
    return _Bound(_run, state)


def in_activity(info: ActivityInfo) -> _Bound:
    return _Bound(_activity, info)
