"""Starting workflows and asking about them, from application code."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal

import redis

from . import clock
from .connection import connect
from .errors import Cancelled, WorkflowAlreadyExists, WorkflowFailed, WorkflowNotFound
from .events import ErrorInfo, Event, SignalReceived, to_dict
from .registry import Workflow, is_importable
from .runtime import advance_dispatch, request_cancel, wake_dispatch
from .serialization import dumps, loads
from .store import TERMINAL, Store, validate_workflow_id

__all__ = ["Client", "WorkflowHandle", "WorkflowStatus", "DEFAULT_QUEUE"]

DEFAULT_QUEUE = "durable"


class Client:
    """Entry point for application code: start workflows, find them, wait for them.

    Args:
        conn: a Redis URL, a ``redis.Redis``, or ``None`` for ``$DURABLE_REDIS_URL``,
            else the embedded Redis under ``./.durable/``.
    """

    def __init__(self, conn: str | redis.Redis | None = None) -> None:
        self.conn = connect(conn)
        self.store = Store(self.conn)

    def start(
        self,
        workflow: Workflow[Any],
        *args: Any,
        workflow_id: str | None = None,
        queue: str | None = None,
        if_exists: Literal["get", "error"] = "get",
        **kwargs: Any,
    ) -> WorkflowHandle:
        """Start ``workflow(*args, **kwargs)`` and return its handle.

        Starting an id that exists starts nothing and returns that workflow's
        handle, so a redelivered webhook is harmless; ``if_exists="error"``
        raises ``WorkflowAlreadyExists`` instead.

        Raises:
            SerializationError: an argument cannot be pickled; nothing is written.
            ValueError: the id is invalid, or the workflow is defined where workers cannot import it.
        """
        if not isinstance(workflow, Workflow):
            raise TypeError(
                f"client.start() takes a function decorated with @durable.workflow, not {workflow!r}"
            )
        if not is_importable(workflow.path):
            raise ValueError(
                f"workflow {workflow.path} is defined in __main__ or inside a function, where workers cannot "
                "import it; move it to a module on the workers' PYTHONPATH"
            )
        if if_exists not in ("get", "error"):
            raise ValueError("if_exists must be 'get' (return the existing workflow) or 'error'")
        workflow_id = validate_workflow_id(workflow_id if workflow_id is not None else uuid.uuid4().hex)
        blob = dumps((args, kwargs), f"the arguments of workflow {workflow.name}")
        queue = queue or workflow.queue or DEFAULT_QUEUE
        run_id = uuid.uuid4().hex
        now = clock.now()
        fields = {
            "path": workflow.path,
            "name": workflow.name,
            "queue": queue,
            "status": "running",
            "run_id": run_id,
            "created_at": repr(now),
            "updated_at": repr(now),
            "input": blob,
        }
        created = self.store.create(workflow_id, fields, advance_dispatch(workflow_id, run_id, queue))
        if not created and if_exists == "error":
            raise WorkflowAlreadyExists(
                f"a workflow with id {workflow_id!r} already exists; choose another id, or omit "
                "if_exists='error' to get its handle"
            )
        return WorkflowHandle(self, workflow_id)

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` to a running workflow; see ``WorkflowHandle.signal``."""
        WorkflowHandle(self, workflow_id).signal(name, payload)

    def cancel(self, workflow_id: str) -> bool:
        """Cancel a running workflow and its running children; see ``WorkflowHandle.cancel``."""
        return WorkflowHandle(self, workflow_id).cancel()

    def get(self, workflow_id: str) -> WorkflowHandle:
        """The handle of an existing workflow; ``WorkflowNotFound`` if there is none."""
        self.store.meta(workflow_id)
        return WorkflowHandle(self, workflow_id)

    def list(self, status: str | None = None) -> list[WorkflowHandle]:
        """Handles of all workflows, oldest first, optionally only those with ``status``."""
        ids = self.store.workflow_ids()
        if status is None:
            return [WorkflowHandle(self, workflow_id) for workflow_id in ids]
        statuses = self.store.statuses(ids)
        return [WorkflowHandle(self, wid) for wid, st in zip(ids, statuses, strict=True) if st == status]


class WorkflowStatus(str):
    """A status string (compare it with ``"running"`` etc.) that also carries ``custom``."""

    custom: Any

    def __new__(cls, status: str, custom: Any = None) -> WorkflowStatus:
        obj = super().__new__(cls, status)
        obj.custom = custom
        return obj


def _custom(blob: bytes | None) -> Any:
    return loads(blob, "the custom status") if blob is not None else None


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a workflow's history, readable."""

    index: int
    type: str
    seq: int
    time: float
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "seq": self.seq, "time": self.time, **self.details}


class WorkflowHandle:
    """A reference to one workflow by id; every call reads Redis afresh."""

    def __init__(self, client: Client, workflow_id: str) -> None:
        self.client = client
        self.id = workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkflowHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> WorkflowStatus:
        """``"running"``, ``"completed"``, ``"failed"`` or ``"cancelled"``; ``.custom`` holds
        the last value the workflow passed to ``durable.set_status``."""
        meta = self.client.store.meta(self.id)
        return WorkflowStatus(meta.status, _custom(meta.custom))

    def signal(self, name: str, payload: Any = None) -> None:
        """Deliver signal ``name`` with ``payload`` to this running workflow.

        Signals are buffered per name in arrival order until a ``wait_signal``
        takes them, and each is delivered once. Raises ``WorkflowNotFound`` if
        the workflow is unknown or has ended, ``SerializationError`` (nothing
        written) if the payload cannot be pickled.
        """
        if not isinstance(name, str) or not name:
            raise TypeError("a signal needs a name (a non-empty string)")
        event = SignalReceived(time=clock.now(), signal=name, payload=payload)
        dumps(payload, f"the payload of signal {name!r}")
        store = self.client.store
        store.send_to_running(self.id, event, f"signal {name!r}", lambda meta: wake_dispatch(store, self.id, meta))

    def cancel(self) -> bool:
        """Ask the workflow to cancel: ``durable.Cancelled`` is raised at its current ``yield``,
        where it may run compensating activities. Its running children are cancelled too.

        Returns False if the workflow has already ended (or was asked before).
        """
        try:
            asked = request_cancel(self.client.store, self.id)
        except WorkflowNotFound:
            self.client.store.meta(self.id)  # unknown ids still raise
            return False
        for child in self.client.store.children(self.id):
            try:
                WorkflowHandle(self.client, child).cancel()
            except WorkflowNotFound:
                pass
        return asked

    def describe(self) -> dict[str, Any]:
        """Everything the meta hash says, readable: name, status, queue, times, why it is held."""
        meta = self.client.store.meta(self.id)
        return {
            "workflow_id": meta.workflow_id,
            "name": meta.name,
            "path": meta.path,
            "status": meta.status,
            "queue": meta.queue,
            "run_id": meta.run_id,
            "created_at": meta.created_at,
            "updated_at": meta.updated_at,
            "held": meta.stuck or None,
            "custom_status": _custom(meta.custom),
            "cancel_requested": meta.cancel_requested,
            "parent": meta.parent or None,
            "children": self.client.store.children(self.id),
            "archived_runs": self.client.store.archived_runs(self.id),
        }

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end and return its result.

        Waits on a pub/sub notification, not by polling. Raises
        ``WorkflowFailed`` if it failed, ``Cancelled`` if it was cancelled,
        ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with closing(self.client.store.subscribe_done(self.id)) as pubsub:
            while True:
                meta = self.client.store.meta(self.id)  # read after subscribing: no missed notice
                if meta.status in TERMINAL:
                    return self._outcome(meta.status, meta.result, meta.error)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"workflow {self.id!r} did not finish within {timeout} s (it is {meta.status})")
                # Wake at least every 30 s to re-read the status: a notice lost with a
                # broken connection must not make us wait forever.
                wait = 30.0 if remaining is None else min(remaining, 30.0)
                pubsub.get_message(timeout=wait)

    def _outcome(self, status: str, result: bytes | None, error: bytes | None) -> Any:
        if status == "completed":
            return loads(result, f"the result of workflow {self.id}") if result is not None else None
        if status == "cancelled":
            raise Cancelled(f"workflow {self.id!r} was cancelled")
        info = ErrorInfo.from_dict(loads(error, "a workflow error") if error else {})
        raise WorkflowFailed(self.id, info.type, info.message, info.traceback)

    def history(self) -> list[dict[str, Any]]:
        """The recorded events, oldest first, as readable dicts."""
        return [entry.as_dict() for entry in self.entries()]

    def entries(self) -> Iterator[HistoryEntry]:
        """The recorded events, oldest first, as ``HistoryEntry`` records (``index``, ``type``,
        ``seq``, ``time``, ``details``); ``history()`` gives the same events as flat dicts."""
        events: list[Event] = self.client.store.history(self.id)
        if not events:
            self.client.store.meta(self.id)  # WorkflowNotFound for an unknown id
        for index, event in enumerate(events):
            data = to_dict(event)
            details = {k: v for k, v in data.items() if k not in ("v", "type", "seq", "time")}
            yield HistoryEntry(index, event.type, event.seq, event.time, details)


