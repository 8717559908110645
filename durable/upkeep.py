"""Workers' housekeeping on Redis: leases, recovery of lost jobs, own queues, due timers,
held workflows, and the slots and starts of ``durable.Limit``s.

A mixin of ``Store``: every key name and Lua script it uses is defined in
``store.py`` (``leases_key``, ``sticky_key``, ``alive_key``, ``held_key``,
``limit_keys``, ``_CLAIM_EXPIRED``, ``_REHOME``, ``_TAKE_LIMIT``), so that one
module still says what durable keeps in Redis; this one holds the operations
that keep workers' jobs from getting lost or from exceeding a limit together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from . import clock
from .records import TERMINAL, Dispatch, Meta

__all__ = ["Upkeep"]


class Upkeep:
    """Lease, recovery, routing and timer operations, mixed into ``Store``."""

    if TYPE_CHECKING:  # provided by Store
        conn: redis.Redis
        _claim_expired: Any
        _line: Any
        _rehome_script: Any
        _take_limit: Any

        @property
        def leases_key(self) -> str: ...
        @property
        def sticky_key(self) -> str: ...
        @property
        def held_key(self) -> str: ...

        def queue(self, name: str) -> Queue: ...
        def metas(self, workflow_ids: Sequence[str]) -> list[Meta | None]: ...
        def alive_key(self, queue_name: str) -> str: ...
        def worker_stats_key(self, name: str) -> str: ...
        def meta_key(self, workflow_id: str) -> str: ...
        def limit_keys(self, name: str) -> list[str]: ...
        def enqueue(self, items: Iterable[Dispatch]) -> None: ...

    def promote_due(self, queue_names: Iterable[str]) -> int:
        """Move scheduled jobs that are due onto their queues; returns how many moved.

        RQ's scheduler does this too, but only in the one worker holding its
        lock; a killed holder's lock lasts 61 s and the others retry taking it
        only at maintenance time (every 600 s by default). Every durable
        worker runs this, so timers keep firing whoever dies. WATCH makes each
        move all-or-nothing; a job moved twice (here and by RQ's scheduler) is
        a duplicate job, which the compare-and-append makes harmless.
        """
        moved = 0
        for name in queue_names:
            queue = self.queue(name)
            registry = ScheduledJobRegistry(queue=queue)
            with self.conn.pipeline() as pipe:
                try:
                    pipe.watch(registry.key)
                    due = cast(list[bytes], pipe.zrangebyscore(registry.key, 0, clock.now(), start=0, num=500))
                    ids = [item.decode() for item in due]
                    if not ids:
                        pipe.unwatch()
                        continue
                    jobs = Job.fetch_many(ids, connection=self.conn)
                    pipe.multi()
                    for job_id, job in zip(ids, jobs, strict=True):
                        if job is not None:
                            queue.enqueue_job(job, pipeline=pipe)
                        pipe.zrem(registry.key, job_id)
                    pipe.execute()
                    moved += sum(job is not None for job in jobs)
                except redis.WatchError:
                    continue  # someone else moved them (or added one): next round
        return moved

    # -- workers' own queues -----------------------------------------------------
    def mark_alive(self, queue_name: str, ttl: float) -> None:
        """Say the worker serving its own queue ``queue_name`` lives for ``ttl`` more seconds."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.set(self.alive_key(queue_name), 1, px=max(1, int(ttl * 1000)))
        pipe.sadd(self.sticky_key, queue_name)
        pipe.execute()

    def put_worker_stats(self, name: str, stats: dict[str, Any], ttl: float) -> None:
        """Publish a worker's counters (cache hits and misses, jobs run) for ``ttl`` seconds."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.hset(self.worker_stats_key(name), mapping={k: str(v) for k, v in stats.items()})
        pipe.pexpire(self.worker_stats_key(name), max(1, int(ttl * 1000)))
        pipe.execute()

    def worker_stats(self) -> list[dict[str, str]]:
        """The counters of every worker that published them lately."""
        keys = sorted(cast(list[bytes], self.conn.keys(self.worker_stats_key("*"))))
        pipe = self.conn.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [{k.decode(): v.decode() for k, v in raw.items()} for raw in pipe.execute() if raw]

    def is_alive(self, queue_name: str) -> bool:
        return bool(self.conn.exists(self.alive_key(queue_name)))

    def mark_gone(self, queue_name: str) -> None:
        self.conn.delete(self.alive_key(queue_name))

    def rehome_dead(self) -> int:
        """Move the jobs waiting in dead workers' own queues (queued, dequeued but never
        started, or scheduled) to their home queues, atomically; returns how many moved."""
        queue = self.queue("x")
        args = [self.sticky_key, self.alive_key(""), queue.redis_queue_namespace_prefix,
                ScheduledJobRegistry(queue=queue).key[: -len("x")], Job.redis_job_namespace_prefix,
                queue.redis_queues_keys]
        return int(self._rehome_script(keys=[], args=args))

    # -- leases ---------------------------------------------------------------
    def hold_leases(self, job_ids: Iterable[str], ttl: float, *, renew: bool = False) -> None:
        """Mark jobs as being run by a live worker for the next ``ttl`` seconds.

        ``renew`` only extends leases that still exist, so a renewal racing the
        release at the end of a job cannot bring a finished job's lease back.
        """
        expiry = clock.now() + ttl
        mapping = {job_id: expiry for job_id in job_ids}
        if mapping:
            self.conn.zadd(self.leases_key, mapping, xx=renew)

    def take_job(self, job_id: str, ttl: float, intermediate_key: str) -> None:
        """Lease a job a worker is starting and take it off RQ's intermediate list, in one
        round trip (RQ leaves it there when a worker serves several queues)."""
        self._line.batch(("ZADD", self.leases_key, clock.now() + ttl, job_id), ("LREM", intermediate_key, 1, job_id))

    def release_lease(self, job_id: str) -> None:
        self.conn.zrem(self.leases_key, job_id)

    def end_job(self, job_id: str, *, drop: bool) -> None:
        """End the lease of a job whose final commit did not (it lost a race, or held), and
        with ``drop`` its RQ job hash, in one round trip: durable.Worker skips the RQ
        bookkeeping that would delete it (its jobs have ``result_ttl=0``)."""
        commands: list[tuple[str, ...]] = [("ZREM", self.leases_key, job_id)]
        if drop:
            commands.append(("DEL", Job.key_for(job_id)))
        self._line.batch(*commands)

    def unleased_in_flight(self, intermediate_key: str) -> list[str]:
        """Ids in RQ's intermediate list (dequeued, not yet started) that hold no lease."""
        ids = [item.decode() for item in cast(list[bytes], self.conn.lrange(intermediate_key, 0, 99))]
        if not ids:
            return []
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.zscore(self.leases_key, job_id)
            pipe.hget(Job.key_for(job_id), "status")
        found = pipe.execute()
        # Still "queued" means no worker got as far as starting it.
        return [job_id for i, job_id in enumerate(ids) if found[2 * i] is None and found[2 * i + 1] == b"queued"]

    def claim_in_flight(self, intermediate_key: str, job_id: str) -> bool:
        """Take a stranded job out of RQ's intermediate list; only one caller gets True."""
        return bool(self.conn.lrem(intermediate_key, 1, job_id))

    def claim_expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of jobs whose worker stopped renewing their lease; each id goes to one caller."""
        ids = self._claim_expired(keys=[self.leases_key], args=[clock.now(), limit])
        return [item.decode() if isinstance(item, bytes) else str(item) for item in ids]

    # -- held workflows ---------------------------------------------------------
    def hold(self, workflow_id: str, reason: str) -> None:
        """Mark a workflow held (``stuck``) and list it, so that workers starting with new
        code advance it again (``wake_held``)."""
        pipe = self.conn.pipeline(transaction=True)
        pipe.hset(self.meta_key(workflow_id), "stuck", reason)
        pipe.sadd(self.held_key, workflow_id)
        pipe.execute()

    def wake_held(self, wake: Callable[[Meta], Dispatch]) -> int:
        """Enqueue an ``advance`` for every held workflow still running (a worker does this as
        it starts: a deploy may have brought the code it needs); returns how many."""
        ids = sorted(item.decode() for item in cast(set[bytes], self.conn.smembers(self.held_key)))
        jobs, done = [], []
        for workflow_id, meta in zip(ids, self.metas(ids), strict=True):  # one round trip for all
            if meta is None or meta.status in TERMINAL or not meta.stuck:
                done.append(workflow_id)  # ended, gone, or moving again: no longer held
            else:
                jobs.append(wake(meta))
        if done:
            self.conn.srem(self.held_key, *done)
        self.enqueue(jobs)
        return len(jobs)

    # -- limits (durable.Limit) -------------------------------------------------
    def take_limit(self, name: str, holder: str, *, now: float, expiry: float, concurrency: int,
                   interval: float) -> tuple[str | None, float]:
        """Take a slot of limit ``name`` for ``holder`` (until ``expiry``, unless renewed or
        released) and its next start, both or neither, in one script.

        ``concurrency``/``interval``: the limit's settings (0 for none). Returns
        ``(None, 0.0)`` when taken, ``("concurrency", 0.0)`` when every slot is held,
        ``("rate", t)`` when the next start is allowed at ``t``.
        """
        # Kept a minute past its time (then it is moot): bounds what a worker whose clock runs far
        # ahead can hold up, while the testing kit's virtual time stays well within it.
        keep_ms = math.ceil(interval * 1000) + 60_000
        found = self._take_limit(keys=self.limit_keys(name), args=[
            repr(now), holder, repr(expiry), concurrency, repr(interval), repr(now + interval), keep_ms])
        if int(found[0]) == 1:
            return None, 0.0
        reason = found[1].decode() if isinstance(found[1], bytes) else str(found[1])
        return reason, float(found[2]) if len(found) > 2 else 0.0

    def release_limit(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of limit ``name`` (nothing if it lapsed or went already)."""
        self.conn.zrem(self.limit_keys(name)[0], holder)

    def renew_limits(self, held: Iterable[tuple[str, str]], ttl: float) -> None:
        """Keep the slots ``(limit name, holder)`` of a running attempt for ``ttl`` more seconds;
        like leases, only slots that still exist (a release racing this must win)."""
        held = list(held)
        if not held:
            return
        pipe = self.conn.pipeline(transaction=False)
        for name, holder in held:
            pipe.zadd(self.limit_keys(name)[0], {holder: clock.now() + ttl}, xx=True)
        pipe.execute()

    def limit_state(self, name: str) -> tuple[dict[str, float], float | None]:
        """Who holds slots of limit ``name`` (holder -> expiry, lapsed ones included) and
        when its next start is allowed (None: now)."""
        slots_key, next_key = self.limit_keys(name)
        pipe = self.conn.pipeline(transaction=False)
        pipe.zrange(slots_key, 0, -1, withscores=True)
        pipe.get(next_key)
        slots, after = pipe.execute()
        return {k.decode(): float(v) for k, v in slots}, float(after) if after is not None else None
