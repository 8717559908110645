"""The plain records the store reads and writes: jobs to dispatch, children, deliveries,
new runs, a workflow's meta hash decoded, and what makes a workflow id usable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .events import Event

__all__ = ["Dispatch", "NewWorkflow", "Delivery", "NewRun", "Meta", "validate_workflow_id", "TERMINAL"]

TERMINAL = frozenset({"completed", "failed", "cancelled"})  # a workflow in one of these never moves again

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}")


def validate_workflow_id(workflow_id: Any) -> str:
    """Return ``workflow_id`` if it is usable as a key, else raise ``ValueError`` saying why."""
    if not isinstance(workflow_id, str) or not _ID_RE.fullmatch(workflow_id):
        raise ValueError(
            f"invalid workflow id {workflow_id!r}: use 1-200 characters of letters, digits and ._:@/+=- "
            "starting with a letter or digit (e.g. 'pr-42' or 'github/acme/repo#42' without the '#')"
        )
    return workflow_id


@dataclass(frozen=True)
class Dispatch:
    """An RQ job to enqueue with a commit: ``func`` is an import path, ``at`` a not-before time."""

    func: str
    args: tuple[Any, ...]
    queue: str
    at: float | None = None
    description: str = ""
    home: str | None = None  # set when ``queue`` is a worker's own: where the job goes if that worker dies
    front: bool = False  # ahead of the queue's backlog: a recovered job has waited long enough


@dataclass(frozen=True)
class NewWorkflow:
    """A workflow to create in the same commit (a child): its meta fields and first job."""

    workflow_id: str
    fields: dict[str, Any]
    first: Dispatch


@dataclass(frozen=True)
class Delivery:
    """An event to append to *another* workflow's history in the same commit (a child's end
    to its parent), with the job that wakes it."""

    workflow_id: str
    event: Event
    wake: Dispatch


@dataclass(frozen=True)
class NewRun:
    """``continue_as_new``: the meta fields of the next run and the job that starts it.

    The ended run's history is archived under ``history:<run id>``; only the
    newest ``keep_runs`` archives are kept.
    """

    run_id: str
    fields: dict[str, Any]
    first: Dispatch
    keep_runs: int = 1


@dataclass(frozen=True)
class Meta:
    """A workflow's meta hash, decoded."""

    workflow_id: str
    path: str
    name: str
    queue: str
    status: str
    run_id: str
    created_at: float
    updated_at: float
    input: bytes
    result: bytes | None
    error: bytes | None
    stuck: str
    custom: bytes | None = None
    cancel_requested: bool = False
    parent: str = ""
    parent_run: str = ""
    parent_seq: int = -1
    parent_queue: str = ""
    owner: str = ""  # the own queue of the worker that keeps this run's generator
    run_started_at: float = 0.0  # set by continue_as_new: when the current run began (else created_at)

    @classmethod
    def decode(cls, workflow_id: str, raw: dict[bytes, bytes]) -> Meta:
        def text(key: str, default: str = "") -> str:
            value = raw.get(key.encode())
            return value.decode() if value is not None else default

        return cls(
            workflow_id=workflow_id,
            path=text("path"),
            name=text("name"),
            queue=text("queue", "durable"),
            status=text("status", "running"),
            run_id=text("run_id"),
            created_at=float(text("created_at", "0")),
            updated_at=float(text("updated_at", "0")),
            input=raw.get(b"input", b""),
            result=raw.get(b"result"),
            error=raw.get(b"error"),
            stuck=text("stuck"),
            custom=raw.get(b"custom"),
            cancel_requested=text("cancel_requested") == "1",
            parent=text("parent"),
            parent_run=text("parent_run"),
            parent_seq=int(text("parent_seq", "-1")),
            parent_queue=text("parent_queue"),
            owner=text("owner"),
            run_started_at=float(text("run_started_at", "0")),
        )
