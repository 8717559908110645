"""``durable.Worker``: an RQ ``SimpleWorker`` that cannot lose a workflow step.

RQ notices a dead ``SimpleWorker``'s job only after ``job_timeout + 60`` s
(with default maintenance, minutes). So every durable job this worker runs
holds a short lease in Redis, renewed by a background thread; when a worker
dies, its leases lapse, and the recovery sweep that runs in *every* durable
worker re-enqueues the abandoned jobs. The same thread moves due timers and
retries onto their queues, so they do not wait for RQ's single scheduler
(a killed holder's lock lasts 61 s, and a live worker retries taking it
only at its maintenance, every 600 s by default). Recovery only re-enqueues: the
compare-and-append in the store decides what gets recorded, so a job that is
recovered twice, or that was not dead after all, is harmless.

It is a ``SimpleWorker`` (no fork per job) because a step is a few
milliseconds of work, and because a process that outlives its jobs can keep
state between them.
"""

from __future__ import annotations

import logging
import os
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
from .runtime import lease_job, lease_released, use_cache
from .store import Dispatch, Store

__all__ = ["Worker", "LEASE_TTL_ENV", "CACHE_SIZE_ENV", "DEFAULT_CACHE_SIZE"]

log = logging.getLogger("durable.worker")

LEASE_TTL_ENV = "DURABLE_LEASE_TTL"
DEFAULT_CACHE_SIZE = 1000
_DURABLE_JOBS = "durable.runtime."


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
                queue = queues[-1]
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
        **kwargs: Any,
    ) -> None:
        size = cache_size if cache_size is not None else int(os.environ.get(CACHE_SIZE_ENV, DEFAULT_CACHE_SIZE))
        name = name or uuid.uuid4().hex
        # Its own queue, served first: steps of runs whose generator it keeps are routed here.
        self.own_queue = f"durable-w-{name}" if size else None
        listed: list[Any] = [queues] if isinstance(queues, (str, Queue)) else list(queues)
        if self.own_queue:
            listed.insert(0, self.own_queue)
        super().__init__(listed, name, *args, **kwargs)
        self.cache = GeneratorCache(size)
        self.lease_ttl = float(lease_ttl if lease_ttl is not None else os.environ.get(LEASE_TTL_ENV, 10))
        if self.lease_ttl <= 0:
            raise ValueError(f"the lease must be a positive number of seconds (${LEASE_TTL_ENV}), not {self.lease_ttl}")
        self.store = Store(self.connection)
        self._holding: str | None = None
        self._limbo: dict[str, float] = {}  # job id -> when this worker first saw it dequeued but unleased
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self._stop.clear()
        if self.own_queue:
            self.store.mark_alive(self.own_queue, self.lease_ttl)
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
        if self.own_queue:
            try:
                self.store.mark_gone(self.own_queue)
                self.store.rehome_dead()
            except (redis.ConnectionError, redis.TimeoutError):
                log.warning("could not hand back the jobs of %s: the others will once it expires", self.own_queue)

    def execute_job(self, job: Job, queue: Queue) -> None:
        use_cache(self.cache, self.own_queue)
        durable_job = (job.func_name or "").startswith(_DURABLE_JOBS)
        try:
            if durable_job:
                self.store.take_job(job.id, self.lease_ttl, queue.intermediate_queue_key)
                self._holding = job.id
                lease_job(job.id)
            try:
                super().execute_job(job, queue)
            finally:
                self._holding = None
            if durable_job:
                if not lease_released():  # the job's last commit usually ended it already
                    self.store.release_lease(job.id)
                lease_job(None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away mid-job. RQ's loop would quit on this; instead wait for it
            # to come back. The step either committed or wrote nothing; if it wrote
            # nothing, its lease lapses and a worker (maybe this one) runs it again.
            log.error("Redis connection lost while running %s (%s); waiting for it to come back", job.id, exc)
            self._wait_for_redis()

    # RQ's work loop quits on any Redis error outside its dequeue retry (its heartbeat,
    # its state updates, its maintenance): ride those out instead, so that a Redis
    # restart never ends a worker.
    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._riding_out("the heartbeat", super().heartbeat, *args, **kwargs)

    def check_for_suspension(self, *args: Any, **kwargs: Any) -> None:
        self._riding_out("the suspension check", super().check_for_suspension, *args, **kwargs)

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
    def _keep(self) -> None:
        interval = min(1.0, max(0.05, self.lease_ttl / 4))
        while not self._stop.wait(interval):
            try:
                holding = self._holding
                if holding is not None:
                    self.store.hold_leases([holding], self.lease_ttl, renew=True)
                if self.own_queue:
                    self.store.mark_alive(self.own_queue, self.lease_ttl)
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
        log.warning("recovering job %s (%s): %s", job.id, job.description, why, extra=ids)
        # Back to the job's home queue: if it came from a worker's own queue, that worker is gone.
        home = (job.meta or {}).get("durable_home") or job.origin
        again = Dispatch(job.func_name or "", tuple(job.args), home, description=job.description or "")
        self.store.enqueue([again])
        return 1
