"""Test workflows with pytest, in process, with a clock that skips time.

``WorkflowEnvironment`` runs the real kernel (the same replay engine, store,
runtime and RQ worker loop) against an in-memory ``fakeredis``, with durable's
clock replaced by a virtual one. When every job is done and the workflow
waits, the environment jumps the clock to the next thing that can happen (a
timer, a retry, a signal you scheduled), so a workflow that sleeps for 30 days
finishes in milliseconds::

    from datetime import timedelta
    from durable.testing import WorkflowEnvironment

    def test_reminders():
        with WorkflowEnvironment() as env:
            env.replace(post, lambda channel, text: None)          # no real Slack
            handle = env.start(monitor_pr, 42, "https://example/pr/42")
            env.signal(handle, "closed", "merged", after=timedelta(days=3))
            assert env.run(handle) == "#pr-42: merged"
            assert [e["type"] for e in env.history(handle)].count("timer_fired") == 3

It needs ``fakeredis[lua]`` (``pip install 'durable[testing]'``).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, cast

try:
    import fakeredis
except ImportError as exc:  # pragma: no cover - only without the testing extra
    raise ImportError("durable.testing needs fakeredis: pip install 'durable[testing]'") from exc
from rq import Queue
from rq.registry import ScheduledJobRegistry

from . import clock
from .client import DEFAULT_QUEUE, Client, WorkflowHandle
from .registry import Activity, Workflow, override
from .store import TERMINAL
from .worker import Worker

__all__ = ["WorkflowEnvironment"]

When = float | timedelta | datetime | None


class WorkflowEnvironment:
    """An in-process kernel on fakeredis with a virtual clock.

    Args:
        start: the virtual time to start at (default: now).
        queues: the queues the in-process worker serves.
    """

    def __init__(self, start: datetime | float | None = None, queues: tuple[str, ...] = (DEFAULT_QUEUE,)) -> None:
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = float(start if start is not None else time.time())
        self.queues = tuple(queues)
        self.conn = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.client = Client(self.conn)
        self._signals: list[tuple[float, int, str, str, Any]] = []
        self._order = itertools.count()
        self._fakes: list[str] = []
        self._previous_clock: Callable[[], float] | None = None
        self._worker = Worker(list(self.queues), connection=self.conn, lease_ttl=60)
        if self._worker.own_queue:  # the in-process worker's own queue (sticky routing) is served too
            self.queues = (self._worker.own_queue, *self.queues)
        self._queue_objects = [Queue(name, connection=self.conn) for name in self.queues]

    # -- context ----------------------------------------------------------------------
    def __enter__(self) -> WorkflowEnvironment:
        self._previous_clock = clock.use(lambda: self._now)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        clock.use(self._previous_clock)
        for path in self._fakes:
            override(path, None)
        self._fakes.clear()

    @property
    def now(self) -> datetime:
        """The virtual time, as an aware datetime in UTC (like ``durable.now()`` in workflows)."""
        return datetime.fromtimestamp(self._now, UTC)

    # -- arranging ------------------------------------------------------------------------
    def replace(self, activity: Activity[Any], fake: Callable[..., Any]) -> None:
        """Run ``fake`` wherever ``activity`` would run, until the environment closes."""
        if not isinstance(activity, Activity):
            raise TypeError(f"replace() takes a @durable.activity, not {activity!r}")
        override(activity.path, fake)
        self._fakes.append(activity.path)

    def start(
        self, workflow: Workflow[Any], *args: Any, workflow_id: str | None = None, **kwargs: Any
    ) -> WorkflowHandle:
        """Start a workflow (nothing runs until ``run`` or ``advance``)."""
        return self.client.start(workflow, *args, workflow_id=workflow_id, **kwargs)

    def signal(self, handle: WorkflowHandle | str, name: str, payload: Any = None, *, after: When = None) -> None:
        """Send a signal now, or when the virtual clock reaches ``after`` (seconds or a
        timedelta from now, or a datetime)."""
        workflow_id = handle.id if isinstance(handle, WorkflowHandle) else handle
        at = self._at(after)
        if at <= self._now:
            self.client.signal(workflow_id, name, payload)
        else:
            heapq.heappush(self._signals, (at, next(self._order), workflow_id, name, payload))

    # -- running ----------------------------------------------------------------------------
    def run(self, handle: WorkflowHandle, *, limit: timedelta = timedelta(days=3650)) -> Any:
        """Run until the workflow ends, skipping idle time; return its result (or raise as
        ``handle.result()`` does).

        Raises:
            RuntimeError: the workflow waits and nothing scheduled can wake it.
            TimeoutError: it has not ended within ``limit`` of virtual time.
        """
        deadline = self._now + limit.total_seconds()
        while True:
            self._drain()
            if handle.status() in TERMINAL:
                return handle.result(timeout=0)
            upcoming = self._next_wakeup()
            if upcoming is None:
                raise RuntimeError(
                    f"workflow {handle.id!r} waits and nothing is scheduled to wake it "
                    f"(does it wait for a signal? send one with env.signal(..., after=...)); "
                    f"history ends with {self.history(handle)[-1:]}"
                )
            if upcoming > deadline:
                raise TimeoutError(f"workflow {handle.id!r} still runs after {limit} of virtual time")
            self._jump(upcoming)

    def advance(self, duration: float | timedelta) -> None:
        """Let ``duration`` of virtual time pass, running everything that falls due."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        end = self._now + seconds
        while True:
            self._drain()
            upcoming = self._next_wakeup()
            if upcoming is None or upcoming > end:
                break
            self._jump(upcoming)
        self._now = max(self._now, end)
        self._deliver()
        self._drain()

    def history(self, handle: WorkflowHandle) -> list[dict[str, Any]]:
        """The workflow's recorded events as dicts, oldest first (``handle.history()``)."""
        return handle.history()

    # -- internals -------------------------------------------------------------------------------
    def _at(self, when: When) -> float:
        if when is None:
            return self._now
        if isinstance(when, datetime):
            return when.timestamp()
        if isinstance(when, timedelta):
            return self._now + when.total_seconds()
        return self._now + float(when)

    def _drain(self) -> None:
        """Run queued jobs until none is left, in this thread, as a burst worker would.

        One worker object serves every drain: its job loop is RQ's own
        (``execute_job``), without the per-burst registration a ``work()`` call costs.
        """
        while True:
            found = Queue.dequeue_any(self._queue_objects, None, connection=self.conn)
            if found is None:
                return
            job, queue = found
            self._worker.execute_job(job, queue)

    def _next_wakeup(self) -> float | None:
        times = [self._signals[0][0]] if self._signals else []
        for name in self.queues:
            registry = ScheduledJobRegistry(name=name, connection=self.conn)
            first = cast(list[tuple[bytes, float]], self.conn.zrange(registry.key, 0, 0, withscores=True))
            if first:
                times.append(first[0][1])
        return min(times) if times else None

    def _jump(self, when: float) -> None:
        self._now = max(self._now, when)
        self._deliver()
        self.client.store.promote_due(self.queues)

    def _deliver(self) -> None:
        while self._signals and self._signals[0][0] <= self._now:
            _, _, workflow_id, name, payload = heapq.heappop(self._signals)
            self.client.signal(workflow_id, name, payload)
