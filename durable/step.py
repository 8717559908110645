"""One step of one workflow: load, replay, decide, commit.

``Step`` is what every durable job does (``durable.runtime``'s job functions
only build one): load the history (or just its tail, onto a cached generator),
replay, turn the decision into events and RQ jobs, run inline activities, and
commit it all with a compare-and-append. Also here: the per-process worker
state the steps share (the generator cache, the own queue, the job's lease)
and the dispatches that wake a workflow where its generator is kept.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import clock, observability
from .activities import MISSING_CODE_RETRY, AttemptOutcome, record_value
from .cache import CachedRun, GeneratorCache
from .commands import ActivityCall, Command, Patched, RecordValue, StartChild, StartTimer, WaitSignal
from .context import ActivityInfo
from .errors import (
    NonDeterminismError,
    PayloadTooLarge,
    SerializationError,
    SignatureError,
    WorkflowAlreadyExists,
)
from .events import (
    ActivityScheduled,
    ChildCompleted,
    ChildFailed,
    ErrorInfo,
    Event,
    TimerFired,
    ValueRecorded,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinued,
    WorkflowFailedEvent,
    command_event,
)
from .limits import run_limited
from .registry import replayer_for, resolve
from .replay import Decision, Replayer
from .routing import FIRE_TIMER, RUN_ACTIVITY, advance_dispatch, own_queue_for, request_cancel, worker_state
from .serialization import dumps, encode_events
from .store import TERMINAL, Delivery, Dispatch, Meta, NewRun, NewWorkflow, Store, validate_workflow_id

__all__ = ["Step", "KEEP_RUNS_ENV", "MAX_ROUNDS"]


log = logging.getLogger("durable.runtime")

KEEP_RUNS_ENV = "DURABLE_KEEP_RUNS"

# A commit loses only when another runner wrote to the same history meanwhile;
# each loss means progress elsewhere, so a bounded number of rounds suffices.
MAX_ROUNDS = 50


@dataclass
class _Round:
    """One attempt at committing: what to write on top of ``length`` history events."""

    length: int
    events: list[Event] = field(default_factory=list)
    dispatch: list[Dispatch] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    children: list[NewWorkflow] = field(default_factory=list)
    deliver: list[Delivery] = field(default_factory=list)
    new_run: NewRun | None = None
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
        cache: GeneratorCache | None = None,
    ) -> None:
        self.store = store
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity = activity
        self.timer = timer
        self.cache = cache
        # Attempts and values already produced by this job, kept across commit conflicts
        # so that a lost race never runs the same side effect twice in one job.
        self._attempts: dict[tuple[int, int], AttemptOutcome] = {}
        self._values: dict[int, ValueRecorded] = {}
        self._held: str | None = None  # why this step could not do everything (shown as "held")
        self._was_held = False
        self._solo = False
        # Its own outcome is all an activity job brings: with the run cached here, its first
        # round may skip the load (see _round).
        self._optimistic = activity is not None
        self._tip = b""  # the last history entry as stored, that the next commit checks is still last

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
        # A cached run is taken out for the round and put back only after it committed
        # everything: a lost race or an error leaves nothing half-applied to reuse.
        cached = self.cache.take(self.workflow_id, self.run_id) if self.cache is not None else None
        optimistic = cached is not None and cached.meta is not None and self._optimistic
        if optimistic:
            # An activity job on a run this worker holds: skip the load and assume history
            # is as this worker left it. If it is not (a signal came, another worker moved
            # on), the commit's compare fails and the next round loads and replays, reusing
            # the attempt's outcome.
            assert cached is not None
            meta: Meta | None = cached.meta
            events: Sequence[Event] | None = []
            self._tip = cached.tip
        else:
            try:
                meta, events, self._tip = self.store.load_run(
                    self.workflow_id, cached.length if cached else 0, cached.tip if cached else b"", pack=True)
                if events is None:  # history is not what this worker saw (lost writes): start over
                    cached = None
                    meta, events, self._tip = self.store.load_run(self.workflow_id, 0, b"", pack=True)
            except (SignatureError, SerializationError) as exc:
                self._hold(f"cannot read its history: {exc}")
                return True
        assert events is not None
        self._optimistic = False  # one try per job
        observability.loaded(meta.name if meta else None, (cached.length if cached else 0) + len(events), bool(cached))
        if meta is None or meta.run_id != self.run_id or meta.status in TERMINAL:
            return True  # gone, a newer run, or finished: a stale job has nothing to do
        self._was_held = bool(meta.stuck)
        if meta.cancel_requested:
            self._cancel_children()
        if cached is not None:
            replayer, length = cached.replayer, cached.length + len(events)
        else:
            try:
                replayer = replayer_for(meta)
            except Exception as exc:
                reason = f"cannot load workflow code {meta.path}: {type(exc).__name__}: {exc}"
                return self._hold_recording(reason, meta, events)
            length = len(events)
        replayer.feed(events)
        work = _Round(length=length)

        own = self._own_contribution(meta, replayer)
        if optimistic and own is not None and not own.events:
            # The cached run does not have this activity open: it is stale (the command was
            # recorded elsewhere) or the job is a duplicate. Only history can tell: load it.
            assert self.cache is not None and cached is not None
            self.cache.put(self.workflow_id, cached)
            return False
        if own is None:
            return self._keep(replayer, work.length, meta)
        work.events += own.events
        work.dispatch += own.dispatch
        replayer.feed(own.events)
        fired: list[Event] = []

        while True:
            try:
                decision = replayer.step()
            except NonDeterminismError as exc:
                return self._held_round(str(exc), work, replayer)
            except (SignatureError, SerializationError) as exc:  # a packed run's fields, read late
                self._hold(f"cannot read its history: {exc}")
                return True
            observability.decided(decision)
            if decision.kind == "wait":
                if self.timer is not None and self.timer in decision.waiting and not fired:
                    fired = [TimerFired(seq=self.timer, time=clock.now())]
                    work.events += fired
                    replayer.feed(fired)
                    continue
                if work.events or work.dispatch:
                    here = own_queue_for(meta.queue)
                    if here and here != meta.owner:
                        work.meta["owner"] = here  # wake-ups for this run now come here
                        meta = dataclasses.replace(meta, owner=here)
                    if not self._commit(work, replayer, final=True):
                        return False
                return self._keep(replayer, work.length + len(work.events), meta)
            if decision.kind != "schedule":
                self._finish(meta, decision, work)
                return self._commit(work, replayer, final=True)
            ran_inline = False
            # One queued activity at a time (not a fan-out) follows its generator to this
            # worker's own queue, so that its completion continues the run from the cache.
            queued = [c for _, c in decision.new if isinstance(c, ActivityCall) and not c.options.inline]
            self._solo = len(queued) == 1
            for seq, command in decision.new:
                if isinstance(command, ActivityCall) and command.options.inline and work.events:
                    # Record what is known before running more user code: a crash in the
                    # inline activity must not also cost what came before it.
                    if not self._commit(work, replayer):
                        return False
                    work = _Round(length=work.length + len(work.events))
                new = self._schedule(meta, seq, command, work)
                ran_inline |= len(new) > 1 and isinstance(command, ActivityCall)
                replayer.feed(new)
            if ran_inline:  # an inline activity ran: commit its result before going on
                if not self._commit(work, replayer):
                    return False
                work = _Round(length=work.length + len(work.events))

    def _keep(self, replayer: Replayer, length: int, meta: Meta) -> bool:
        """Park the suspended run for this worker's next step on the workflow."""
        if self.cache is not None:
            self.cache.put(self.workflow_id, CachedRun(self.run_id, replayer, length, meta, self._tip))
        return True

    def _own_contribution(self, meta: Meta, replayer: Replayer) -> _Own | None:
        """The event this job brings (an activity outcome, a fired timer), or nothing.

        A job whose own answer is already in history (a duplicate, or a job recovered
        from a worker that died after recording it) still advances the workflow: that
        worker may have died between two commits of one step, and then this job is the
        only one left to carry it on. None only for a timer that is not due yet.
        """
        if self.activity is not None:
            seq, attempt = self.activity
            scheduled = replayer.open_command(seq)
            if not isinstance(scheduled, ActivityScheduled) or replayer.attempt_recorded(seq, attempt):
                return _Own([], [])
            outcome = self._attempt(scheduled, attempt)
            return _Own(outcome.events, self._retry_dispatch(meta, scheduled, attempt, outcome))
        if self.timer is not None:
            fire_at = getattr(replayer.open_command(self.timer), "fire_at", None)
            if fire_at is not None and clock.now() < fire_at:  # RQ's scheduler can run a job ~1 s early
                self.store.enqueue([self._timer_dispatch(meta, self.timer, fire_at)])
                return None
            # Recorded only if the workflow still waits on it (see _round): a timer that
            # lost an any_of, or a signal wait answered by its signal, leaves no trace.
        return _Own([], [])

    # -- new commands -----------------------------------------------------------------------
    def _schedule(self, meta: Meta, seq: int, command: Command, work: _Round) -> list[Event]:
        """Record a new command and arrange what carries it out. Returns the new events."""
        now = clock.now()
        if isinstance(command, RecordValue):
            new: list[Event] = [self._value(seq, command, now)]
        elif isinstance(command, StartChild):
            new = self._start_child(meta, seq, command, now, work)
        else:
            event = command_event(seq, command, now)
            new = [event]
            if isinstance(command, ActivityCall) and isinstance(event, ActivityScheduled):
                if command.options.inline:
                    outcome = self._attempt(event, 1)
                    new += outcome.events
                    work.dispatch += self._retry_dispatch(meta, event, 1, outcome)
                else:
                    queue, home = self._route(meta, command.options.queue, self._solo)
                    work.dispatch.append(
                        Dispatch(RUN_ACTIVITY, (self.workflow_id, self.run_id, seq, 1), queue, home=home,
                                 description=f"durable activity {command.activity} for {self.workflow_id}#{seq}")
                    )
            elif isinstance(command, (StartTimer, WaitSignal)):
                fire_at = getattr(event, "fire_at", None)
                if fire_at is not None:
                    work.dispatch.append(self._timer_dispatch(meta, seq, fire_at))
            elif not isinstance(command, Patched):  # pragma: no cover - the engine yields nothing else
                raise TypeError(f"cannot schedule {command!r}")
        work.events += new
        return new

    def _value(self, seq: int, command: RecordValue, now: float) -> ValueRecorded:
        if seq not in self._values:  # computed once per job, however many rounds it takes
            self._values[seq] = record_value(seq, command, now)
        return self._values[seq]

    def _start_child(self, meta: Meta, seq: int, command: StartChild, now: float, work: _Round) -> list[Event]:
        child_id = command.workflow_id or f"{self.workflow_id}/{seq}"
        started = command_event(seq, command, now, child_id=child_id)
        try:
            validate_workflow_id(child_id)
            if self.store.exists(child_id):
                raise WorkflowAlreadyExists(f"cannot start child workflow {child_id!r}: that id is taken")
            target = resolve(command.workflow)
            blob = dumps((command.args, command.kwargs), f"the arguments of child workflow {child_id}")
        except Exception as exc:  # the parent learns at its yield, as for a failed child
            info = ErrorInfo.from_exception(exc)
            return [started, ChildFailed(seq=seq, time=now, workflow_id=child_id, parent_run=self.run_id,
                                         error=info.to_dict())]
        run_id = uuid.uuid4().hex
        queue = command.queue or getattr(target, "queue", None) or meta.queue
        fields = {
            "path": command.workflow, "name": getattr(target, "name", command.workflow), "queue": queue,
            "status": "running", "run_id": run_id, "created_at": repr(now), "updated_at": repr(now), "input": blob,
            "parent": self.workflow_id, "parent_run": self.run_id, "parent_seq": str(seq),
            "parent_queue": meta.queue,
        }
        work.children.append(NewWorkflow(child_id, fields, advance_dispatch(child_id, run_id, queue)))
        return [started]

    def _attempt(self, scheduled: ActivityScheduled, attempt: int) -> AttemptOutcome:
        key = (scheduled.seq, attempt)
        if key not in self._attempts:
            info = ActivityInfo(self.workflow_id, self.run_id, scheduled.seq, attempt, scheduled.activity)
            self._attempts[key] = run_limited(self.store, scheduled, info)  # or put off by its durable.Limit
        return self._attempts[key]

    def _retry_dispatch(
        self, meta: Meta, scheduled: ActivityScheduled, attempt: int, outcome: AttemptOutcome
    ) -> list[Dispatch]:
        if outcome.retry_at is None:
            return []
        queue, home = self._route(meta, scheduled.activity_options().queue, outcome.missing_code is None)
        if outcome.missing_code is not None:
            self._held = (f"activity {scheduled.activity} cannot be imported on a worker of queue {queue!r} "
                          f"({outcome.missing_code}); trying again every {MISSING_CODE_RETRY:g} s")
            observability.held(self._held)
        elif outcome.limited is None:  # a failed attempt; one its limit put off runs again as itself
            attempt += 1
        return [
            Dispatch(RUN_ACTIVITY, (self.workflow_id, self.run_id, scheduled.seq, attempt), queue, home=home,
                     at=outcome.retry_at,
                     description=f"durable attempt {attempt} of {scheduled.activity} for {self.workflow_id}")
        ]

    def _timer_dispatch(self, meta: Meta, seq: int, fire_at: float) -> Dispatch:
        queue, home = self._route(meta, None, True)
        return Dispatch(FIRE_TIMER, (self.workflow_id, self.run_id, seq), queue, at=fire_at, home=home,
                        description=f"durable timer {self.workflow_id}#{seq}")

    def _route(self, meta: Meta, asked: str | None, sticky: bool) -> tuple[str, str | None]:
        """(queue, home) for a job of this run: this worker's own queue when the job is on
        the workflow's queue and follows the generator, else the queue it asks for."""
        queue = asked or meta.queue
        own = own_queue_for(queue)
        if sticky and own and queue == meta.queue:
            return own, queue
        return queue, None

    # -- endings ---------------------------------------------------------------------------------
    def _finish(self, meta: Meta, decision: Decision, work: _Round) -> None:
        now = clock.now()
        if decision.kind == "continue":
            self._continue(meta, decision, work, now)
            return
        if decision.kind == "complete":
            try:
                blob = dumps(decision.result, f"the result of workflow {self.workflow_id}")
            except (SerializationError, PayloadTooLarge) as exc:
                decision = Decision("fail", error=ErrorInfo.from_exception(exc))
            else:
                work.events.append(WorkflowCompleted(time=now, result=decision.result))
                work.meta.update(status="completed", result=blob)
                work.notify = "completed"
                self._tell_parent(meta, ChildCompleted(seq=meta.parent_seq, time=now, workflow_id=self.workflow_id,
                                                       parent_run=meta.parent_run, result=decision.result), work)
                return
        error = decision.error
        assert error is not None
        status = "cancelled" if decision.kind == "cancelled" else "failed"
        work.events.append(WorkflowCancelled(time=now) if status == "cancelled"
                           else WorkflowFailedEvent(time=now, error=error.to_dict()))
        work.meta.update(status=status, error=dumps(error.to_dict(), "a workflow error"))
        work.notify = status
        self._tell_parent(meta, ChildFailed(seq=meta.parent_seq, time=now, workflow_id=self.workflow_id,
                                            parent_run=meta.parent_run, error=error.to_dict()), work)

    def _continue(self, meta: Meta, decision: Decision, work: _Round, now: float) -> None:
        run_id = uuid.uuid4().hex
        try:
            blob = dumps((decision.args, decision.kwargs), f"the arguments of workflow {self.workflow_id}")
        except (SerializationError, PayloadTooLarge) as exc:
            self._finish(meta, Decision("fail", error=ErrorInfo.from_exception(exc)), work)
            return
        work.events.append(WorkflowContinued(time=now, new_run=run_id, args=decision.args, kwargs=decision.kwargs))
        keep = int(os.environ.get(KEEP_RUNS_ENV, "1"))
        fields = {"input": blob, "status": "running", "previous_run": self.run_id, "run_started_at": repr(now)}
        work.new_run = NewRun(run_id, fields, advance_dispatch(self.workflow_id, run_id, meta.queue), keep_runs=keep)

    def _tell_parent(self, meta: Meta, event: Event, work: _Round) -> None:
        if meta.parent:
            wake = advance_dispatch(meta.parent, meta.parent_run, meta.parent_queue or meta.queue)
            work.deliver.append(Delivery(meta.parent, event, wake))

    def _commit(self, work: _Round, replayer: Replayer, *, final: bool = False) -> bool:
        if self._held is not None:
            work.meta["stuck"] = self._held
        elif self._was_held:
            work.meta["stuck"] = ""  # it moves again: no longer held
        if replayer.custom_status is not None:
            try:
                work.meta["custom"] = dumps(replayer.custom_status, "the value passed to durable.set_status")
            except (SerializationError, PayloadTooLarge) as exc:
                log.warning("custom status not stored: %s", exc)
        # The job's last commit also ends its lease (one round trip fewer per job);
        # earlier commits must not, or a crash after them would go unrecovered.
        lease = worker_state["lease"] if final and work.new_run is None else None
        encoded = encode_events(work.events)
        won = self.store.commit(
            self.workflow_id, work.length, encoded=encoded, meta=work.meta, dispatch=work.dispatch,
            notify=work.notify, children=work.children, deliver=work.deliver, new_run=work.new_run,
            release_lease=lease, run_id=self.run_id, tip=self._tip,
        )
        if won and encoded:
            self._tip = encoded[-1]
        if won and lease is not None:
            worker_state["released"] = True
        if won and (work.notify or work.new_run is not None):
            observability.ended(work.notify or "continued")
        return won

    def _cancel_children(self) -> None:
        """Cancellation reaches the whole tree: request it for every child still running."""
        for child in self.store.children(self.workflow_id):
            try:
                request_cancel(self.store, child)
            except Exception:  # an ended or vanished child needs nothing
                log.debug("child %s not cancelled", child, exc_info=True)

    def _hold(self, reason: str) -> None:
        """Keep the workflow as it is and say why it cannot move. Deploying code that
        replays (or the missing module) lets it continue: every worker that starts
        advances the held workflows again (``Store.wake_held``)."""
        observability.held(reason)
        self.store.hold(self.workflow_id, reason)

    def _hold_recording(self, reason: str, meta: Meta, events: Sequence[Event]) -> bool:
        """Hold a workflow whose code cannot be loaded, still recording what this job
        brings (an activity's outcome, a due timer): only history needs reading for that."""
        bare = Replayer(_unloadable, workflow_id=self.workflow_id, run_id=self.run_id, name=meta.name)
        bare.feed(events)
        work = _Round(length=len(events))
        own = self._own_contribution(meta, bare)
        if own is None:  # a timer that is not due: it was queued again
            return True
        work.events += own.events
        work.dispatch += own.dispatch
        bare.feed(own.events)
        return self._held_round(reason, work, bare)

    def _held_round(self, reason: str, work: _Round, replayer: Replayer) -> bool:
        """Hold the workflow, but record what this job brings: an activity's outcome or a
        due timer is a fact whatever the code, and no job would bring it again. Once code
        that replays is deployed, the workflow finds it in history."""
        if self.timer is not None and not any(isinstance(e, TimerFired) for e in work.events):
            fire_at = getattr(replayer.open_command(self.timer), "fire_at", None)
            if fire_at is not None and clock.now() >= fire_at:
                work.events.append(TimerFired(seq=self.timer, time=clock.now()))
        if not (work.events or work.dispatch):
            self._hold(reason)
            return True
        self._held = reason  # the commit writes it, and lists the workflow as held
        if not self._commit(work, replayer, final=True):
            return False
        observability.held(reason)
        return True


def _unloadable() -> Any:
    """Stands in for workflow code that cannot be imported: only history is read."""
    raise RuntimeError("the workflow's code could not be loaded")
    yield  # a generator function, like any workflow


@dataclass(frozen=True)
class _Own:
    events: list[Event]
    dispatch: list[Dispatch]
