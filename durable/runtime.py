"""The RQ job functions that move workflows forward.

Three jobs, all found by RQ through their import path:

- ``advance(id, run)``: replay and dispatch whatever the workflow asks next.
- ``run_activity(id, run, seq, attempt)``: run one attempt of a queued
  activity (or the retry of an inline one), record its outcome and, in the
  same job and the same commit, continue the workflow: no second hop.
- ``fire_timer(id, run, seq)``: record that a durable timer fired, and continue.

Every job is safe to run twice or concurrently: each one replays, decides,
and commits with a compare-and-append (``Store.commit``). If another runner
committed first, the loser replays again and finds its work already recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rq import get_current_job

from .activities import AttemptOutcome, run_attempt
from .commands import ActivityCall, StartTimer
from .context import ActivityInfo
from .errors import NonDeterminismError, SerializationError
from .events import (
    ActivityRetrying,
    ActivityScheduled,
    ErrorInfo,
    Event,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailedEvent,
    command_event,
)
from .registry import resolve
from .replay import Decision, Replayer
from .serialization import dumps, loads
from .store import TERMINAL, Dispatch, Meta, Store

__all__ = ["advance", "run_activity", "fire_timer", "advance_dispatch", "Step"]

log = logging.getLogger("durable.runtime")

ADVANCE = "durable.runtime.advance"
RUN_ACTIVITY = "durable.runtime.run_activity"
FIRE_TIMER = "durable.runtime.fire_timer"

# A commit loses only when another runner wrote to the same history meanwhile;
# each loss means progress elsewhere, so a bounded number of rounds suffices.
MAX_ROUNDS = 50


def advance_dispatch(workflow_id: str, run_id: str, queue: str) -> Dispatch:
    return Dispatch(ADVANCE, (workflow_id, run_id), queue, description=f"durable advance {workflow_id}")


def _store() -> Store:
    job = get_current_job()
    if job is None:
        raise RuntimeError("durable's job functions run inside an RQ worker (durable worker)")
    return Store(job.connection)


def advance(workflow_id: str, run_id: str) -> None:
    """RQ job: continue a workflow from its history."""
    Step(_store(), workflow_id, run_id).run()


def run_activity(workflow_id: str, run_id: str, seq: int, attempt: int) -> None:
    """RQ job: run attempt ``attempt`` of the activity at ``seq``, then continue the workflow."""
    Step(_store(), workflow_id, run_id, activity=(seq, attempt)).run()


def fire_timer(workflow_id: str, run_id: str, seq: int) -> None:
    """RQ job: fire the durable timer at ``seq`` (never before its deadline), then continue."""
    Step(_store(), workflow_id, run_id, timer=seq).run()


@dataclass
class _Round:
    """One attempt at committing: what to append and enqueue on top of ``length`` events."""

    length: int
    events: list[Event] = field(default_factory=list)
    dispatch: list[Dispatch] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    notify: str | None = None


class Step:
    """One job's worth of progress on one workflow."""

    def __init__(
        self,
        store: Store,
        workflow_id: str,
        run_id: str,
        *,
        activity: tuple[int, int] | None = None,
        timer: int | None = None,
    ) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity = activity
        self.timer = timer
        # Attempts already run by this job, kept across commit conflicts so that a
        # lost race never runs the same side effect twice in one job.
        self._attempts: dict[tuple[int, int], AttemptOutcome] = {}

    def run(self) -> None:
        for _ in range(MAX_ROUNDS):
            if self._round():
                return
        raise RuntimeError(
            f"workflow {self.workflow_id}: gave up after {MAX_ROUNDS} commit conflicts in one step; "
            "another runner keeps writing its history. The workflow is intact; this job can be retried."
        )

    # -- one round: load, replay, decide, commit; True when done -------------------
    def _round(self) -> bool:
        meta, history = self.store.load(self.workflow_id)
        if meta is None or meta.run_id != self.run_id or meta.status in TERMINAL:
            return True  # gone, a newer run, or finished: a stale job has nothing to do
        try:
            replayer = self._replayer(meta)
        except Exception as exc:
            self._hold(f"cannot load workflow code {meta.path}: {type(exc).__name__}: {exc}")
            return True
        replayer.feed(history)
        work = _Round(length=len(history))

        own = self._own_contribution(meta, history)
        if own is None:
            return True
        if own:
            work.events += own.events
            work.dispatch += own.dispatch
            if not own.events or not own.events[-1].resolves:
                return self._commit(work)  # a retry was scheduled: nothing new for the workflow
            replayer.feed(own.events)

        while True:
            try:
                decision = replayer.step()
            except NonDeterminismError as exc:
                self._hold(str(exc))
                return True
            if decision.kind == "wait":
                return self._commit(work) if work.events else True
            if decision.kind in ("complete", "fail"):
                self._finish(decision, work)
                return self._commit(work)
            new = self._schedule(meta, decision, work)
            replayer.feed(new)
            if new and isinstance(new[-1], ActivityRetrying):
                return self._commit(work)  # an inline activity waits for its retry
            if len(new) > 1:  # an inline activity resolved: commit before going on
                if not self._commit(work):
                    return False
                work = _Round(length=work.length + len(work.events))

    def _replayer(self, meta: Meta) -> Replayer:
        target = resolve(meta.path)
        args, kwargs = loads(meta.input, f"the arguments of workflow {self.workflow_id}")
        return Replayer(
            getattr(target, "func", target), args, kwargs, workflow_id=self.workflow_id, run_id=self.run_id,
            name=meta.name,
        )

    def _own_contribution(self, meta: Meta, history: list[Event]) -> _Own | None:
        """The event this job brings (an activity outcome, a fired timer); None if stale."""
        if self.activity is not None:
            seq, attempt = self.activity
            scheduled = _find(history, seq, ActivityScheduled)
            if not isinstance(scheduled, ActivityScheduled) or _resolved(history, seq) or _retried(
                history, seq, attempt
            ):
                return None  # unknown, already answered, or this attempt already recorded: a duplicate job
            outcome = self._attempt(meta, scheduled, attempt)
            return _Own(outcome.events, self._retry_dispatch(meta, scheduled, attempt, outcome))
        if self.timer is not None:
            started = _find(history, self.timer, TimerStarted)
            if not isinstance(started, TimerStarted) or _resolved(history, self.timer):
                return None
            if time.time() < started.fire_at:  # RQ's scheduler can run a job up to ~1 s early
                self.store.enqueue([self._timer_dispatch(meta, self.timer, started.fire_at)])
                return None
            return _Own([TimerFired(seq=self.timer, time=time.time())], [])
        return _Own([], [])

    def _schedule(self, meta: Meta, decision: Decision, work: _Round) -> list[Event]:
        """Record a new command; run it now if it is an inline activity. Returns the new events."""
        command, seq, now = decision.command, decision.seq, time.time()
        assert command is not None
        event = command_event(seq, command, now)
        new: list[Event] = [event]
        if isinstance(command, ActivityCall) and isinstance(event, ActivityScheduled):
            if command.options.inline:
                outcome = self._attempt(meta, event, 1)
                new += outcome.events
                work.dispatch += self._retry_dispatch(meta, event, 1, outcome)
            else:
                queue = command.options.queue or meta.queue
                work.dispatch.append(
                    Dispatch(RUN_ACTIVITY, (self.workflow_id, self.run_id, seq, 1), queue,
                             description=f"durable activity {command.activity} for {self.workflow_id}#{seq}")
                )
        elif isinstance(command, StartTimer) and isinstance(event, TimerStarted):
            work.dispatch.append(self._timer_dispatch(meta, seq, event.fire_at))
        work.events += new
        return new

    def _attempt(self, meta: Meta, scheduled: ActivityScheduled, attempt: int) -> AttemptOutcome:
        key = (scheduled.seq, attempt)
        if key not in self._attempts:
            info = ActivityInfo(self.workflow_id, self.run_id, scheduled.seq, attempt, scheduled.activity)
            log.debug("running %s attempt %d for %s#%d", scheduled.activity, attempt, self.workflow_id, scheduled.seq)
            self._attempts[key] = run_attempt(scheduled, info)
        return self._attempts[key]

    def _retry_dispatch(
        self, meta: Meta, scheduled: ActivityScheduled, attempt: int, outcome: AttemptOutcome
    ) -> list[Dispatch]:
        if outcome.retry_at is None:
            return []
        queue = scheduled.activity_options().queue or meta.queue
        return [
            Dispatch(RUN_ACTIVITY, (self.workflow_id, self.run_id, scheduled.seq, attempt + 1), queue,
                     at=outcome.retry_at,
                     description=f"durable retry {attempt + 1} of {scheduled.activity} for {self.workflow_id}")
        ]

    def _timer_dispatch(self, meta: Meta, seq: int, fire_at: float) -> Dispatch:
        return Dispatch(FIRE_TIMER, (self.workflow_id, self.run_id, seq), meta.queue, at=fire_at,
                        description=f"durable timer {self.workflow_id}#{seq}")

    def _finish(self, decision: Decision, work: _Round) -> None:
        now = time.time()
        if decision.kind == "complete":
            try:
                blob = dumps(decision.result, f"the result of workflow {self.workflow_id}")
            except SerializationError as exc:
                decision = Decision("fail", error=ErrorInfo.from_exception(exc))
            else:
                work.events.append(WorkflowCompleted(time=now, result=decision.result))
                work.meta.update(status="completed", result=blob)
                work.notify = "completed"
                return
        error = decision.error
        assert error is not None
        work.events.append(WorkflowFailedEvent(time=now, error=error.to_dict()))
        work.meta.update(status="failed", error=dumps(error.to_dict(), "a workflow error"))
        work.notify = "failed"

    def _commit(self, work: _Round) -> bool:
        return self.store.commit(
            self.workflow_id, work.length, work.events, meta=work.meta, dispatch=work.dispatch, notify=work.notify
        )

    def _hold(self, reason: str) -> None:
        """Keep the workflow as it is and say why it cannot move: fixing the code and
        re-advancing it (or deploying the missing module) lets it continue."""
        log.error("workflow %s is held: %s", self.workflow_id, reason)
        self.store.set_fields(self.workflow_id, {"stuck": reason})


@dataclass(frozen=True)
class _Own:
    events: list[Event]
    dispatch: list[Dispatch]

    def __bool__(self) -> bool:
        return bool(self.events or self.dispatch)


def _find(history: list[Event], seq: int, kind: type[Event]) -> Event | None:
    for event in history:
        if event.seq == seq and isinstance(event, kind):
            return event
    return None


def _resolved(history: list[Event], seq: int) -> bool:
    return any(event.seq == seq and event.resolves for event in history)


def _retried(history: list[Event], seq: int, attempt: int) -> bool:
    return any(isinstance(e, ActivityRetrying) and e.seq == seq and e.attempt == attempt for e in history)
