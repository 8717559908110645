"""``durable.Worker``: an RQ ``SimpleWorker`` that cannot lose a workflow step.

RQ notices a dead ``SimpleWorker``'s job only after ``job_timeout + 60`` s
(with default maintenance, minutes). So every durable job this worker runs
holds a short lease in Redis, renewed by a background thread (with the slots
of ``durable.Limit``s its attempt holds); when a worker dies, its leases (and
slots) lapse, and the recovery sweep that runs in *every* durable
worker re-enqueues the abandoned jobs. The same thread moves due timers and
retries onto their queues, so they do not wait for RQ's single scheduler
(a killed holder's lock lasts 61 s, and a live worker retries taking it
only at its maintenance, every 600 s by default). Recovery only re-enqueues: the
compare-and-append in the store decides what gets recorded, so a job that is
recovered twice, or that was not dead after all, is harmless.

It is a ``SimpleWorker`` (no fork per job) because a step is a few
milliseconds of work, and because a process that outlives its jobs can keep
state between them.

Stopping: SIGTERM (or SIGINT) lets the current step finish, then the worker
hands its own queue back and exits. A step still running ``stop_timeout``
seconds later (``$DURABLE_STOP_TIMEOUT``, default 30) is abandoned: the job
goes back to the front of its home queue for another worker, and the worker
exits. A second SIGTERM does the same at once. Either way nothing waits for a
lease to lapse, and the abandoned attempt counts for nothing: activities are
at-least-once, and the compare-and-append records one outcome.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any

import redis
from rq import SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import format_exc_info
from rq.queue import Queue
from rq.utils import now
from rq.worker.base import WorkerStatus

from .cache import CACHE_SIZE_ENV, GeneratorCache
from .queueing import OWN_QUEUE_PREFIX, DurableQueue
from .routing import held_limits
from .runtime import lease_job, lease_released, use_cache, wake_dispatch
from .store import Dispatch, Store

__all__ = ["Worker", "LEASE_TTL_ENV", "CACHE_SIZE_ENV", "STOP_TIMEOUT_ENV", "DEFAULT_CACHE_SIZE"]

log = logging.getLogger("durable.worker")

LEASE_TTL_ENV = "DURABLE_LEASE_TTL"
STOP_TIMEOUT_ENV = "DURABLE_STOP_TIMEOUT"
_LAST_RESORT = 10.0  # seconds after the stop timeout: a step that ignored SystemExit is left behind
DEFAULT_CACHE_SIZE = 1000
_DURABLE_JOBS = "durable.runtime."
HEARTBEAT_EVERY = 1.0  # seconds: RQ's heartbeat and suspension check, at most this often
OWN_STREAK = 4  # jobs in a row from its own queue before a worker looks at the shared ones first


class Worker(SimpleWorker):
    """An RQ worker for durable workflows; use it like any RQ worker class.

    ``rq worker -w durable.Worker --with-scheduler durable`` or ``durable worker``.
    The lease (``$DURABLE_LEASE_TTL`` seconds, default 10) bounds how long a
    step of a worker that died waits before another worker takes it over.
    ``cache_size`` (``$DURABLE_CACHE_SIZE``, default 1000, 0 for none) is how
    many suspended workflows it keeps live, so that its next step on one of
    them reads and applies only the new events.
    """

    queue_class = DurableQueue

    def __init__(
        self,
        queues: Any,
        name: str | None = None,
        *args: Any,
        lease_ttl: float | None = None,
        cache_size: int | None = None,
        stop_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        size = cache_size if cache_size is not None else int(os.environ.get(CACHE_SIZE_ENV, DEFAULT_CACHE_SIZE))
        name = name or uuid.uuid4().hex
        # Its own queue, served first: steps of runs whose generator it keeps are routed here.
        self.own_queue = f"{OWN_QUEUE_PREFIX}{name}" if size else None
        listed: list[Any] = [queues] if isinstance(queues, (str, Queue)) else list(queues)
        if self.own_queue:
            listed.insert(0, self.own_queue)
        super().__init__(listed, name, *args, **kwargs)
        self.cache = GeneratorCache(size)
        self.lease_ttl = float(lease_ttl if lease_ttl is not None else os.environ.get(LEASE_TTL_ENV, 10))
        if self.lease_ttl <= 0:
            raise ValueError(f"the lease must be a positive number of seconds (${LEASE_TTL_ENV}), not {self.lease_ttl}")
        self.stop_timeout = float(stop_timeout if stop_timeout is not None
                                  else os.environ.get(STOP_TIMEOUT_ENV, 30))
        if self.stop_timeout < 0:
            raise ValueError(f"the stop timeout must be >= 0 seconds (${STOP_TIMEOUT_ENV}), not {self.stop_timeout}")
        self.store = Store(self.connection)
        self._holding: str | None = None
        self._forced = False  # a cold stop interrupted the current job: hand it back
        self._own_streak = 0  # jobs taken in a row from the own queue (see reorder_queues)
        self._stop_asked: float | None = None  # monotonic time of the first SIGTERM while busy
        self._limbo: dict[str, float] = {}  # job id -> when this worker first saw it dequeued but unleased
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._revive_after = 0.0
        self._next_beat = self._next_suspension_check = 0.0
        self._state_written: str | None = None
        # jobs run since the last heartbeat wrote RQ's counters (see _perform_durable)
        self._counts: dict[str, Any] = {"ok": 0, "failed": 0, "seconds": 0.0}

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self._stop.clear()
        if self.own_queue:
            self.store.mark_alive(self.own_queue, self.lease_ttl)
        try:  # this worker may bring the code a held workflow waits for: let them try again
            woken = self.store.wake_held(lambda meta: wake_dispatch(self.store, meta.workflow_id, meta))
            if woken:
                log.info("advancing %d held workflow(s) again with this worker's code", woken)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("could not look for held workflows: Redis unreachable")
        self._keeper = threading.Thread(target=self._keep, name="durable-lease-keeper", daemon=True)
        self._keeper.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._stop.set()
            self._keeper.join(timeout=5)
            self.leave()

    def leave(self) -> None:
        """Hand back what waits in this worker's own queue (a clean exit: no need to wait
        for its liveness to lapse)."""
        self._publish_stats()
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                self._write_counts(pipe)
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("could not write this worker's last job counts to RQ's worker record")
        if self.own_queue:
            try:
                self.store.mark_gone(self.own_queue)
                self.store.rehome_dead()
            except (redis.ConnectionError, redis.TimeoutError):
                log.warning("could not hand back the jobs of %s: the others will once it expires", self.own_queue)

    def execute_job(self, job: Job, queue: Queue) -> None:
        use_cache(self.cache, self.own_queue, [name for name in self.queue_names() if name != self.own_queue])
        try:
            if not (job.func_name or "").startswith(_DURABLE_JOBS):
                return super().execute_job(job, queue)
            self.store.take_job(job.id, self.lease_ttl, queue.intermediate_queue_key)
            self._holding = job.id
            lease_job(job.id, self.lease_ttl)
            try:
                done = self._perform_durable(job, queue)
            finally:
                self._holding = None
            if self._forced:  # recorded as failed: run it elsewhere
                self._redispatch(job.id, "its worker was stopped in the middle of it")
            if not lease_released():  # the job's last commit usually ended it (and dropped the job) already
                self.store.end_job(job.id, drop=done)
            lease_job(None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away mid-job. RQ's loop would quit on this; instead wait for it
            # to come back. The step either committed or wrote nothing; if it wrote
            # nothing, its lease lapses and a worker (maybe this one) runs it again.
            log.error("Redis connection lost while running %s (%s); waiting for it to come back", job.id, exc)
            self._wait_for_redis()
        return None

    def _perform_durable(self, job: Job, queue: Queue) -> bool:
        """RQ's ``perform_job`` for durable's own jobs, without RQ's per-job bookkeeping.

        RQ spends some 25 round trips per job on an execution record, the started
        registry, job status and heartbeats, results and counters: most of a step's
        cost, and all of it redundant for these jobs, whose lease (``take_job``) is
        what recovery trusts and whose outcome is the history. So a durable job runs
        here with only the lease around it; its final commit ends the lease and
        drops the job hash in the same write. A job that raises (a bug, a cold stop)
        still goes through RQ's failure handling, so it shows in RQ's failed registry.
        """
        self.set_state(WorkerStatus.BUSY)
        job.started_at = now()
        try:
            job.perform()
        except BaseException:  # as RQ does: a cold stop's SystemExit too (the loop then sees the stop)
            exc_info = sys.exc_info()
            job.ended_at = now()
            job._status = JobStatus.FAILED
            self.handle_exception(job, *exc_info)
            self.handle_job_failure(job=job, queue=queue, exc_string=format_exc_info(exc_info))
            self._counts["failed"] += 1
            return False
        finally:
            self.set_state(WorkerStatus.IDLE)
        self._counts["ok"] += 1
        self._counts["seconds"] += (now() - job.started_at).total_seconds()
        log.debug("job %s done", job.id)
        return True

    def reorder_queues(self, reference_queue: Queue) -> None:
        """Look at the own queue first, but at the shared ones first after every
        ``OWN_STREAK`` jobs in a row from it.

        The own queue comes first so that a run's next step finds its generator
        here; but a busy worker's own queue is never empty (each step it runs
        queues the run's next one there), and strict priority starved the shared
        queues: new workflows, and the jobs of a stopped or dead worker handed
        back to them. Taking turns every time cost an extra empty LMOVE per step;
        every few steps bounds the wait as well. Among the shared queues RQ's
        strategy applies."""
        if not self.own_queue:
            return super().reorder_queues(reference_queue)
        own = [q for q in self._ordered_queues if q.name == self.own_queue]
        shared = [q for q in self._ordered_queues if q.name != self.own_queue]
        if reference_queue.name == self.own_queue:
            self._own_streak += 1
            if self._own_streak >= OWN_STREAK:
                self._own_streak = 0
                self._ordered_queues = shared + own
            else:
                self._ordered_queues = own + shared
            return None
        self._own_streak = 0
        self._ordered_queues = shared
        matching = [q for q in shared if q.name == reference_queue.name]
        if matching:
            super().reorder_queues(matching[0])
        self._ordered_queues = own + self._ordered_queues
        return None

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: finish the current step (within ``stop_timeout``), then exit."""
        if self._holding is not None and self._stop_asked is None:
            self._stop_asked = time.monotonic()
            log.warning("stopping: finishing the current step first (at most %.0f s more)", self.stop_timeout)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """A second SIGTERM/SIGINT, or the stop timeout: abandon the current step now.

        RQ raises ``SystemExit`` inside the running job and records it as failed;
        ``execute_job`` then hands the job back instead of letting it be lost."""
        if self._holding is not None:
            self._forced = True
        super().request_force_stop(signum, frame)

    def _enforce_stop_timeout(self) -> None:
        """Called by the keeper: abandon a step that outlives the stop timeout."""
        if self._stop_asked is None or self._holding is None:
            return
        # RQ ignores a second signal within 1 s of the first, so the cold stop waits that long at least
        late = time.monotonic() - self._stop_asked - max(self.stop_timeout, 1.1)
        if late >= _LAST_RESORT:  # the step swallowed SystemExit: leave it behind
            log.error("the step of job %s ignored the stop; handing it back and exiting", self._holding)
            self._redispatch(self._holding, "its worker was stopped in the middle of it")
            self.store.release_lease(self._holding)
            self.leave()
            os._exit(1)
        if late >= 0 and not self._forced:
            log.warning("the current step outlived the stop timeout (%.0f s): abandoning it", self.stop_timeout)
            self._forced = True
            os.kill(os.getpid(), signal.SIGTERM)  # RQ's cold stop, in the main thread

    # RQ's work loop quits on any Redis error outside its dequeue retry (its heartbeat,
    # its state updates, its maintenance): ride those out instead, so that a Redis
    # restart never ends a worker.
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, at most once a second when it is a round trip of its own.

        RQ beats three times per job, three commands each, against a TTL of minutes;
        durable's liveness is its leases. Each beat also brings RQ's job counters up
        to date (kept in memory by ``_perform_durable``)."""
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        if timeout is None and time.monotonic() < self._next_beat:
            return None
        self._next_beat = time.monotonic() + HEARTBEAT_EVERY

        def beat() -> None:
            with self.connection.pipeline(transaction=False) as pipe:
                super(Worker, self).heartbeat(timeout, pipe)
                self._write_counts(pipe)
        self._riding_out("the heartbeat", beat)
        return None

    def _write_counts(self, pipe: Any) -> None:
        """Add the jobs run since the last write to RQ's counters, and send ``pipe``."""
        counts, self._counts = self._counts, {"ok": 0, "failed": 0, "seconds": 0.0}
        if counts["ok"] or counts["failed"]:
            pipe.hincrby(self.key, "successful_job_count", counts["ok"])
            pipe.hincrby(self.key, "failed_job_count", counts["failed"])
            pipe.hincrbyfloat(self.key, "total_working_time", counts["seconds"])
        pipe.execute()
        self.successful_job_count += counts["ok"]
        self.failed_job_count += counts["failed"]

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """Idle and busy are written by the keeper (within a quarter second), not twice per job."""
        if pipeline is None and state in (WorkerStatus.IDLE, WorkerStatus.BUSY):
            self._state = state
            return
        super().set_state(state, pipeline)
        self._state_written = state

    def _write_state(self) -> None:
        state = self._state
        if state != self._state_written and not self._stop_requested:
            self.connection.hset(self.key, "state", state)
            self._state_written = state

    def check_for_suspension(self, burst: bool) -> None:
        """RQ looks for ``rq suspend`` before every job; once a second is as good."""
        if time.monotonic() >= self._next_suspension_check:
            self._next_suspension_check = time.monotonic() + HEARTBEAT_EVERY
            self._riding_out("the suspension check", super().check_for_suspension, burst)
        self._riding_out("restarting the scheduler", self._revive_scheduler)

    def _revive_scheduler(self) -> None:
        """Restart RQ's scheduler process if it died (at most once a second, between jobs).

        It exits on its first Redis error (a restart, a Sentinel failover) and RQ restarts
        it only at maintenance, every 10 minutes by default. The new process connects
        afresh (through Sentinel, if that is how this worker connects).
        """
        scheduler = self.scheduler
        process = scheduler._process if scheduler is not None else None
        if scheduler is None or process is None or process.is_alive() or process.exitcode == 0:
            return  # none, running, or stopped on purpose (the worker is shutting down)
        if self._stop_requested or time.monotonic() < self._revive_after:
            return
        self._revive_after = time.monotonic() + 1.0
        log.warning("RQ's scheduler process exited (code %s); restarting it", process.exitcode)
        scheduler.acquire_locks(auto_start=True)

    def run_maintenance_tasks(self) -> None:
        self._riding_out("maintenance", super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("Redis connection lost while waiting for jobs (%s); waiting for it", exc)
                self._wait_for_redis()
                if self._stop_requested:
                    return None

    def _riding_out(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.error("Redis connection lost during %s (%s); waiting for it to come back", what, exc)
            self._wait_for_redis()
            return None

    def _wait_for_redis(self) -> None:
        delay = 0.5
        while not self._stop_requested:
            try:
                self.connection.ping()
                log.warning("Redis is back; carrying on")
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- background: renew own lease, recover others' --------------------------
    def stats(self) -> dict[str, Any]:
        """This worker's counters, as published in Redis (``Store.worker_stats``)."""
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
                "queues": ",".join(self.queue_names()), "jobs": self.successful_job_count + self.failed_job_count
                + self._counts["ok"] + self._counts["failed"],
                "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
                "cache_evictions": self.cache.evictions, "cached": len(self.cache), "updated_at": time.time()}

    def _publish_stats(self) -> None:
        try:
            self.store.put_worker_stats(self.name, self.stats(), ttl=max(10.0, 3 * self.lease_ttl))
        except (redis.ConnectionError, redis.TimeoutError):
            log.debug("could not publish this worker's counters", exc_info=True)

    def _keep(self) -> None:
        # Often enough to renew leases (a quarter of their TTL) and to fire timers within
        # a quarter of a second of their time.
        interval = min(0.25, max(0.05, self.lease_ttl / 4))
        # Looking for others' lapsed leases and dead workers' own queues costs Redis work
        # that grows with the number of workers (the rehome script checks each worker's
        # liveness), so every worker does it less often, at a random phase: within a
        # second, or half a lease, of a death is soon enough next to the lease itself.
        sweep_every = max(1.0, self.lease_ttl / 2)
        next_sweep = time.monotonic() + random.uniform(0, sweep_every)
        rounds = 0
        while not self._stop.wait(interval):
            rounds += 1
            if rounds % 8 == 1:  # every 2 s or so
                self._publish_stats()
            try:
                holding = self._holding
                if holding is not None:
                    self.store.hold_leases([holding], self.lease_ttl, renew=True)
                    self.store.renew_limits(held_limits(), self.lease_ttl)  # a dead worker's lapse with it
                    self._enforce_stop_timeout()
                if self.own_queue:
                    self.store.mark_alive(self.own_queue, self.lease_ttl)
                self._write_state()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every * random.uniform(0.8, 1.2)
                    self.recover()
                    self.store.rehome_dead()
                self.store.promote_due(self.queue_names())
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # the main loop reports outages
                log.debug("durable lease keeper: Redis unreachable (%s), retrying", exc)
            except Exception:  # anything else must not kill the keeper either; the next round retries
                log.exception("durable lease keeper: round failed, retrying")

    def recover(self) -> int:
        """Re-enqueue durable jobs that a dead worker held; returns how many.

        Two cases: a job whose lease stopped being renewed (its worker died while
        running it), and a job that RQ moved to a queue's intermediate list but no
        worker ever leased (its worker died between RQ's dequeue and the lease).
        """
        count = 0
        for job_id in self.store.claim_expired_leases():
            count += self._redispatch(job_id, "its worker stopped renewing the lease")
        now = time.monotonic()
        for queue in self.queues:
            for job_id in self.store.unleased_in_flight(queue.intermediate_queue_key):
                first = self._limbo.setdefault(job_id, now)
                if now - first >= self.lease_ttl and self.store.claim_in_flight(queue.intermediate_queue_key, job_id):
                    count += self._redispatch(job_id, "its worker died between dequeue and start")
        self._limbo = {k: v for k, v in self._limbo.items() if now - v < 10 * self.lease_ttl}
        return count

    def _redispatch(self, job_id: str, why: str) -> int:
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return 0
        if not (job.func_name or "").startswith(_DURABLE_JOBS):
            return 0
        ids = dict(zip(("workflow_id", "run_id", "seq", "attempt"), job.args, strict=False))  # as a step logs them
        log.warning("recovering %s %s: %s", job.func_name, tuple(job.args), why, extra=ids)
        # Back to the job's home queue: if it came from a worker's own queue, that worker is gone.
        home = (job.meta or {}).get("durable_home") or job.origin
        again = Dispatch(job.func_name or "", tuple(job.args), home, description=job.description or "", front=True)
        self.store.enqueue([again])
        return 1
