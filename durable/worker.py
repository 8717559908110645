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
import threading
import time
import uuid
from typing import Any

import redis
from rq import SimpleWorker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.queue import Queue

from .cache import CACHE_SIZE_ENV, GeneratorCache
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
OWN_QUEUE_PREFIX = "durable-w-"
OWN_STREAK = 4  # jobs in a row from its own queue before a worker looks at the shared ones first


class DurableQueue(Queue):
    """RQ's Queue, dequeuing from several queues the way RQ dequeues from one.

    RQ moves a job from a single queue into an intermediate list as it takes it
    (so a worker that dies before starting it leaves a trace the recovery sweep
    finds), but pops from several queues with BLPOP, which leaves none. A durable
    worker always serves several (its own queue first, then the shared ones), so
    it takes jobs with LMOVE from each in order, and blocks on the last one in
    short slices between passes.
    """

    BLOCK_SLICE = 0.5  # seconds: how long an idle worker may miss a job arriving on an earlier queue

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Any,
        timeout: int | None,
        connection: Any,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> Any:
        queues = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for queue in queues:
                moved = connection.lmove(queue.key, queue.intermediate_queue_key)
                if moved is not None:
                    break
            else:
                if deadline is None:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DequeueTimeout(timeout, ",".join(q.key for q in queues))
                # Wait where outside work arrives: on the last shared queue. A worker's own
                # queue gets mostly what its own steps queue there, found by the pass above.
                queue = next((q for q in reversed(queues) if not q.name.startswith(OWN_QUEUE_PREFIX)), queues[-1])
                moved = connection.blmove(queue.key, queue.intermediate_queue_key, min(cls.BLOCK_SLICE, remaining))
                if moved is None:
                    continue
            job_id = moved.decode() if isinstance(moved, bytes) else str(moved)
            found = cls._fetch_dequeued_job(connection, queue.key, job_id, job_class=job_class,
                                            serializer=serializer, death_penalty_class=death_penalty_class)
            if found is not None:
                return found


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
        if self.own_queue:
            try:
                self.store.mark_gone(self.own_queue)
                self.store.rehome_dead()
            except (redis.ConnectionError, redis.TimeoutError):
                log.warning("could not hand back the jobs of %s: the others will once it expires", self.own_queue)

    def execute_job(self, job: Job, queue: Queue) -> None:
        use_cache(self.cache, self.own_queue, [name for name in self.queue_names() if name != self.own_queue])
        durable_job = (job.func_name or "").startswith(_DURABLE_JOBS)
        try:
            if durable_job:
                self.store.take_job(job.id, self.lease_ttl, queue.intermediate_queue_key)
                self._holding = job.id
                lease_job(job.id, self.lease_ttl)
            try:
                super().execute_job(job, queue)
            finally:
                self._holding = None
            if durable_job:
                if self._forced:  # RQ recorded the interrupted job as failed: run it elsewhere
                    self._redispatch(job.id, "its worker was stopped in the middle of it")
                if not lease_released():  # the job's last commit usually ended it already
                    self.store.release_lease(job.id)
                lease_job(None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away mid-job. RQ's loop would quit on this; instead wait for it
            # to come back. The step either committed or wrote nothing; if it wrote
            # nothing, its lease lapses and a worker (maybe this one) runs it again.
            log.error("Redis connection lost while running %s (%s); waiting for it to come back", job.id, exc)
            self._wait_for_redis()

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
    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._riding_out("the heartbeat", super().heartbeat, *args, **kwargs)

    def check_for_suspension(self, *args: Any, **kwargs: Any) -> None:
        self._riding_out("the suspension check", super().check_for_suspension, *args, **kwargs)
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
                "queues": ",".join(self.queue_names()), "jobs": self.successful_job_count + self.failed_job_count,
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
