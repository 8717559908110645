"""Every Redis key durable uses, every Lua script, and every write it makes.

Per workflow (the ``{id}`` hash tag keeps them in one Redis Cluster slot)::

    durable:{id}:meta           hash  path, name, queue, status, run_id, input, result, error, times,
                                      custom status, cancel flag, parent (for a child)
    durable:{id}:history        list  encoded events of the current run, append-only
    durable:{id}:packed         list  blocks of PACK_SIZE history events, each one pickle (packed.py): a
                                      copy for fast cold loads; dropped with the history, rebuilt on demand
    durable:{id}:history:<run>  list  a kept earlier run (continue_as_new), newest DURABLE_KEEP_RUNS only
    durable:{id}:runs           list  run ids of the kept earlier runs, newest first
    durable:{id}:children       set   ids of the child workflows it started
    durable:{id}:done           pub/sub channel announcing the end of the workflow

Shared::

    durable:workflows      zset  workflow id -> creation time (for listing)
    durable:leases         zset  RQ job id -> lease expiry (jobs in the hands of a live worker)
    durable:held           set   ids of held workflows (code that cannot replay or load): advanced
                                 again by every worker that starts, in case it brings the fix
    durable:sticky         set   workers' own queues (durable-w-<worker>) that may hold jobs
    durable:alive:<queue>  str   present while the worker serving that own queue lives (PX)
    durable:worker:<name>  hash  a worker's counters (cache hits/misses, jobs), refreshed by it (PX)
    durable:limit:{name}:slots  zset  holder -> expiry: attempts running under a durable.Limit
    durable:limit:{name}:next   str   the earliest time the limit's next attempt may start (PX)

Writes to history are compare-and-append: ``commit`` succeeds only if the history still has
the length the caller replayed, and it records the events, updates the meta hash and enqueues
the RQ jobs that follow in one round trip (the ``_COMMIT`` script; WATCH/MULTI for
``continue_as_new``). A loser of a race writes nothing and replays again, which is how a
completion is recorded exactly once however often its job runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from . import clock
from .errors import WorkflowNotFound
from .events import Event
from .line import Line
from .reads import PACK_SIZE, Reads
from .records import TERMINAL, Delivery, Dispatch, Meta, NewRun, NewWorkflow, validate_workflow_id
from .serialization import encode_event, encode_events
from .upkeep import Upkeep

__all__ = [
    "Store", "Dispatch", "NewWorkflow", "Delivery", "NewRun", "Meta", "validate_workflow_id", "TERMINAL", "PACK_SIZE",
]

# KEYS[1] = leases zset; ARGV[1] = now (unix seconds), ARGV[2] = max ids to claim.
# Removes and returns up to ARGV[2] members whose expiry has passed. Only one
# caller gets each id, so only one worker re-dispatches an abandoned job.
_CLAIM_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZREM', KEYS[1], id) end
return ids
"""

# KEYS[1] = the workflow's history list, KEYS[2] = its meta hash.
# ARGV[1] = the history length the caller replayed; ARGV[2] = the run it replayed ('' to not
# check); ARGV[3] = the last entry it replayed, as its length, ':' and its first 256 bytes ('' to
# not check; '0:' for an empty history: see _tip_mark); ARGV[4] = n, how many keys must not
# exist (the meta hashes of children about to be created); ARGV[5 .. 4+n] = those keys; then
# the writes, each as: argc, command, arg1 .. arg(argc-1) (what a MULTI would have held).
# Applies every write only if history still has that length, belongs to that run (a
# continue_as_new may have started a new history that reached the same length), still ends
# with that entry (writes lost in a failover or an AOF restart, then regrown to the same length
# by others, are a different history), and none of those keys exists: a compare-and-append in
# one round trip. Returns 1 if it wrote, 0 if another writer won.
_COMMIT = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'run_id') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  local last = redis.call('LINDEX', KEYS[1], -1) or ''
  if #last .. ':' .. string.sub(last, 1, 256) ~= ARGV[3] then return 0 end
end
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  if redis.call('EXISTS', ARGV[i]) == 1 then return 0 end
end
local i = 5 + n
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return 1
"""

# ARGV[1] = the set of workers' own queue names; ARGV[2] = the prefix of their liveness keys;
# ARGV[3] = RQ's queue key prefix; ARGV[4] = RQ's scheduled-registry key prefix; ARGV[5] = RQ's
# job key prefix; ARGV[6] = RQ's set of queue keys. For every own queue whose liveness key is
# gone, moves its queued, dequeued-but-unstarted and scheduled jobs to each job's home queue
# (the job hash's durable_home field) and forgets the queue, all at once: a worker killed
# half-way through cannot strand what it was moving. Returns how many jobs moved.
# (RQ's keys are not declared in KEYS: standalone Redis and Sentinel allow it, like _COMMIT.)
_REHOME = """
local moved = 0
for _, name in ipairs(redis.call('SMEMBERS', ARGV[1])) do
  if redis.call('EXISTS', ARGV[2] .. name) == 0 then
    for _, list in ipairs({ARGV[3] .. name, ARGV[3] .. name .. ':intermediate'}) do
      for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
        local home = redis.call('HGET', ARGV[5] .. id, 'durable_home')
        if home then
          redis.call('RPUSH', ARGV[3] .. home, id)
          redis.call('SADD', ARGV[6], ARGV[3] .. home)
          redis.call('HSET', ARGV[5] .. id, 'origin', home, 'status', 'queued')
          moved = moved + 1
        end
      end
      redis.call('DEL', list)
    end
    local entries = redis.call('ZRANGE', ARGV[4] .. name, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      local home = redis.call('HGET', ARGV[5] .. entries[i], 'durable_home')
      if home then
        redis.call('ZADD', ARGV[4] .. home, entries[i + 1], entries[i])
        redis.call('SADD', ARGV[6], ARGV[3] .. home)
        redis.call('HSET', ARGV[5] .. entries[i], 'origin', home)
        moved = moved + 1
      end
    end
    redis.call('DEL', ARGV[4] .. name)
    redis.call('SREM', ARGV[1], name)
  end
end
return moved
"""

# KEYS[1] = meta hash, KEYS[2] = packed blocks, KEYS[3] = history; ARGV[1] = events per block.
# A cold load in one round trip: the meta, every packed block, the history entries after them,
# and the last entry as stored (what the next commit's compare checks the history still ends with).
_LOAD = """
local blocks = redis.call('LRANGE', KEYS[2], 0, -1)
local tail = redis.call('LRANGE', KEYS[3], #blocks * tonumber(ARGV[1]), -1)
return {redis.call('HGETALL', KEYS[1]), blocks, tail, redis.call('LINDEX', KEYS[3], -1) or ''}
"""

# KEYS[1] = packed blocks, KEYS[2] = history, KEYS[3] = meta; ARGV[1] = how many blocks the caller
# saw, ARGV[2] = events per block, ARGV[3] = the run the blocks belong to, ARGV[4..] = new blocks.
# Appends them only if nobody else did and the history of that run really holds those events.
_PACK = """
local have = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) ~= have then return 0 end
if redis.call('HGET', KEYS[3], 'run_id') ~= ARGV[3] then return 0 end
if redis.call('LLEN', KEYS[2]) < (have + #ARGV - 3) * tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
return 1
"""

# KEYS[1] = a limit's slots zset, KEYS[2] = its next-start key; ARGV[1] = now, ARGV[2] = holder, ARGV[3] =
# its expiry, ARGV[4] = concurrency (0: none), ARGV[5] = seconds between starts (0: none), ARGV[6] = the
# next start if this one goes, ARGV[7] = ms to keep it. A slot and a start together or neither: drops
# lapsed holders (a dead worker's), refuses when every slot is held ({0, 'concurrency'}) or the next
# start is later ({0, 'rate', that time as stored: a Lua number comes back truncated}), else takes both.
_TAKE_LIMIT = """
local most = tonumber(ARGV[4])
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  if redis.call('ZCARD', KEYS[1]) >= most then return {0, 'concurrency'} end
end
if tonumber(ARGV[5]) > 0 then
  local after = redis.call('GET', KEYS[2])
  if after and tonumber(after) > tonumber(ARGV[1]) then return {0, 'rate', after} end
  redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[7])
end
if most > 0 then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end
return {1}
"""

_RPUSH_CHUNK = 500  # events per RPUSH: keeps each command far below Lua's unpack limit


def _tip_mark(entry: bytes) -> bytes:
    """What the commit script compares the history's last entry with: its length and first 256
    bytes. Most entries are shorter and compared whole; a longer one starts with its HMAC or
    its seq and write time, so an entry rewritten at the same position by another writer (after
    lost writes) does not match. (Cheaper than a digest; fakeredis lacks redis.sha1hex.)"""
    return str(len(entry)).encode() + b":" + entry[:256]


def _mapping(fields: dict[str, Any]) -> Any:
    """Meta fields as redis-py's ``hset`` wants them (its stub is stricter than its code)."""
    return fields


class Store(Reads, Upkeep):
    """Durable's view of one Redis database.

    Keys, scripts and writes (commits, creation, deliveries) live here; reads
    (meta, history, listings) come from ``Reads`` and the workers' housekeeping
    (leases, recovery, own queues, timer promotion, held workflows, limits) from
    ``Upkeep``, both of which use the keys and scripts defined in this module.
    """

    def __init__(self, conn: redis.Redis, prefix: str = "durable") -> None:
        self.conn = conn
        self.prefix = prefix
        self._queues: dict[str, Queue] = {}
        self._claim_expired = conn.register_script(_CLAIM_EXPIRED)
        self._commit_script = conn.register_script(_COMMIT)
        self._rehome_script = conn.register_script(_REHOME)
        self._load_script = conn.register_script(_LOAD)
        self._pack_script = conn.register_script(_PACK)
        self._take_limit = conn.register_script(_TAKE_LIMIT)
        self._line = Line(conn)  # the commit's own connection

    # -- keys ---------------------------------------------------------------
    def meta_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:meta"

    def history_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:history"

    def packed_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:packed"

    def children_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:children"

    def runs_key(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:runs"

    def archive_key(self, workflow_id: str, run_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:history:{run_id}"

    def done_channel(self, workflow_id: str) -> str:
        return f"{self.prefix}:{{{workflow_id}}}:done"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:workflows"

    @property
    def held_key(self) -> str:
        return f"{self.prefix}:held"

    @property
    def leases_key(self) -> str:
        return f"{self.prefix}:leases"

    def alive_key(self, queue_name: str) -> str:
        return f"{self.prefix}:alive:{queue_name}"

    def worker_stats_key(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    @property
    def sticky_key(self) -> str:
        return f"{self.prefix}:sticky"

    def limit_keys(self, name: str) -> list[str]:
        """A ``durable.Limit``'s slots and next-start keys (one hash tag: one script uses both)."""
        return [f"{self.prefix}:limit:{{{name}}}:slots", f"{self.prefix}:limit:{{{name}}}:next"]

    def queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.conn)
        return self._queues[name]

    # -- writes -------------------------------------------------------------
    def create(self, workflow_id: str, fields: dict[str, Any], first: Dispatch) -> bool:
        """Create a workflow and enqueue its first step atomically; False if the id exists."""
        meta_key = self.meta_key(workflow_id)
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(meta_key)
                if pipe.exists(meta_key):
                    pipe.unwatch()
                    return False
                pipe.multi()
                self._create(workflow_id, fields, first, pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def _create(self, workflow_id: str, fields: dict[str, Any], first: Dispatch, pipe: redis.client.Pipeline) -> None:
        pipe.delete(self.history_key(workflow_id), self.packed_key(workflow_id))
        pipe.hset(self.meta_key(workflow_id), mapping=_mapping(fields))
        pipe.zadd(self.index_key, {workflow_id: float(fields.get("created_at", clock.now()))})
        self._enqueue(first, pipe)

    def commit(
        self,
        workflow_id: str,
        expected_length: int,
        events: Sequence[Event] = (),
        *,
        meta: dict[str, Any] | None = None,
        dispatch: Iterable[Dispatch] = (),
        notify: str | None = None,
        children: Sequence[NewWorkflow] = (),
        deliver: Sequence[Delivery] = (),
        new_run: NewRun | None = None,
        release_lease: str | None = None,
        run_id: str = "",
        tip: bytes | None = None,
        encoded: Sequence[bytes] | None = None,
    ) -> bool:
        """Append ``events`` if history still has ``expected_length`` events, atomically with
        the meta update, the jobs to enqueue, the children to create, the events to deliver
        to a parent, the next run, and the end-of-workflow notice.

        Returns False, having written nothing, when another writer got there first
        (or a child id to create exists by now: the caller's next replay sees it).
        ``release_lease`` ends that job's lease in the same write (its last commit).
        ``run_id``, when given, must still be the workflow's run, and ``tip``, when given,
        the history's last entry (b"" for none), or nothing is written. ``encoded``: the
        events already encoded (by ``encode_events``), so the caller knows the new tip.
        Raises ``SerializationError`` (writing nothing) when an event cannot be encoded.
        """
        encoded = list(encoded) if encoded is not None else encode_events(events)
        delivered = [(item, encode_event(item.event)) for item in deliver]
        if new_run is not None:
            return self._commit_watched(workflow_id, expected_length, encoded, meta, dispatch, notify, children,
                                        delivered, new_run, run_id, tip)
        # The common case in one round trip: buffer the writes as a MULTI would hold them (RQ's
        # enqueue included, through its pipeline= API); the script applies them if the compare holds.
        pipe = self.conn.pipeline(transaction=True)
        pipe.multi()
        self._writes(pipe, workflow_id, encoded, meta, dispatch, notify, children, delivered)
        if release_lease is not None:  # the job's final commit ends its lease, and the job
            pipe.zrem(self.leases_key, release_lease)
            pipe.delete(Job.key_for(release_lease))
        argv: list[Any] = [expected_length, run_id, "" if tip is None else _tip_mark(tip),
                           len(children), *(self.meta_key(c.workflow_id) for c in children)]
        for args, _options in pipe.command_stack:
            argv.append(len(args))
            argv.extend(args)
        pipe.reset()
        keys = [self.history_key(workflow_id), self.meta_key(workflow_id)]
        return bool(self._line.script(self._commit_script.sha, _COMMIT, keys, argv))  # see line.py

    def _writes(
        self,
        pipe: redis.client.Pipeline,
        workflow_id: str,
        encoded: list[bytes],
        meta: dict[str, Any] | None,
        dispatch: Iterable[Dispatch],
        notify: str | None,
        children: Sequence[NewWorkflow],
        delivered: list[tuple[Delivery, bytes]],
    ) -> None:
        history_key = self.history_key(workflow_id)
        for start in range(0, len(encoded), _RPUSH_CHUNK):
            pipe.rpush(history_key, *encoded[start:start + _RPUSH_CHUNK])
        fields = {"updated_at": repr(clock.now()), **(meta or {})}
        pipe.hset(self.meta_key(workflow_id), mapping=_mapping(fields))
        if fields.get("stuck") == "":  # it moves again
            pipe.srem(self.held_key, workflow_id)
        elif fields.get("stuck"):
            pipe.sadd(self.held_key, workflow_id)
        for item in dispatch:
            self._enqueue(item, pipe)
        for child in children:
            self._create(child.workflow_id, child.fields, child.first, pipe)
            pipe.sadd(self.children_key(workflow_id), child.workflow_id)
        for delivery, data in delivered:
            pipe.rpush(self.history_key(delivery.workflow_id), data)
            self._enqueue(delivery.wake, pipe)
        if notify is not None:
            pipe.publish(self.done_channel(workflow_id), notify)

    def _commit_watched(
        self,
        workflow_id: str,
        expected_length: int,
        encoded: list[bytes],
        meta: dict[str, Any] | None,
        dispatch: Iterable[Dispatch],
        notify: str | None,
        children: Sequence[NewWorkflow],
        delivered: list[tuple[Delivery, bytes]],
        new_run: NewRun,
        run_id: str = "",
        tip: bytes | None = None,
    ) -> bool:
        """The rare ``continue_as_new`` commit, which must read the kept runs first: WATCH/MULTI."""
        history_key = self.history_key(workflow_id)
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(history_key, self.runs_key(workflow_id))
                # a new run renames the (watched) history, so the run read here cannot change unseen
                stale_run = run_id and pipe.hget(self.meta_key(workflow_id), "run_id") != run_id.encode()
                stale_tip = tip is not None and (pipe.lindex(history_key, -1) or b"") != tip
                if pipe.llen(history_key) != expected_length or stale_run or stale_tip:
                    pipe.unwatch()
                    return False
                runs = cast(list[bytes], pipe.lrange(self.runs_key(workflow_id), 0, -1))
                stale = runs[max(new_run.keep_runs - 1, 0):] if new_run.keep_runs > 0 else runs
                pipe.multi()
                self._writes(pipe, workflow_id, encoded, meta, dispatch, None, children, delivered)
                self._start_run(workflow_id, new_run, stale, pipe)
                if notify is not None:
                    pipe.publish(self.done_channel(workflow_id), notify)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def _start_run(self, workflow_id: str, run: NewRun, stale: list[bytes], pipe: redis.client.Pipeline) -> None:
        history_key = self.history_key(workflow_id)
        pipe.delete(self.packed_key(workflow_id))
        old_run = cast(str, run.fields.get("previous_run", ""))
        if run.keep_runs > 0 and old_run:
            pipe.rename(history_key, self.archive_key(workflow_id, old_run))
            pipe.lpush(self.runs_key(workflow_id), old_run)
        else:
            pipe.delete(history_key)
        for item in stale:
            pipe.delete(self.archive_key(workflow_id, item.decode()))
            pipe.lrem(self.runs_key(workflow_id), 1, item.decode())
        pipe.hdel(self.meta_key(workflow_id), "result", "error", "stuck", "cancel_requested")
        pipe.hset(self.meta_key(workflow_id), mapping=_mapping({**run.fields, "run_id": run.run_id}))
        self._enqueue(run.first, pipe)

    def send_to_running(self, workflow_id: str, event: Event, what: str, wake: Callable[[Meta], Dispatch],
                        meta_fields: dict[str, Any] | None = None,
                        skip: Callable[[Meta], bool] | None = None) -> bool:
        """Append ``event`` (a signal, a cancel request) to a *running* workflow and wake it.

        Raises ``WorkflowNotFound`` for an unknown id or one that has ended, naming
        ``what`` was refused. Returns False without writing when ``skip(meta)`` says so.
        """
        data = encode_event(event)
        meta_key = self.meta_key(workflow_id)
        for _ in range(100):
            with self.conn.pipeline() as pipe:
                try:
                    pipe.watch(meta_key)
                    raw = cast(dict[bytes, bytes], pipe.hgetall(meta_key))
                    if not raw:
                        raise WorkflowNotFound(f"cannot {what}: no workflow with id {workflow_id!r}")
                    meta = Meta.decode(workflow_id, raw)
                    if meta.status in TERMINAL:
                        raise WorkflowNotFound(
                            f"cannot {what}: workflow {workflow_id!r} has already {meta.status}; "
                            "only running workflows take signals and cancellation"
                        )
                    if skip is not None and skip(meta):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.rpush(self.history_key(workflow_id), data)
                    if meta_fields:
                        pipe.hset(meta_key, mapping=_mapping(meta_fields))
                    self._enqueue(wake(meta), pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # a worker updated the meta meanwhile: read it again
        raise RuntimeError(f"cannot {what}: workflow {workflow_id!r} kept changing; try again")

    def set_fields(self, workflow_id: str, fields: dict[str, Any]) -> None:
        self.conn.hset(self.meta_key(workflow_id), mapping=_mapping(fields))

    def enqueue(self, items: Iterable[Dispatch]) -> None:
        """Enqueue jobs outside any history write (re-dispatch, early timers)."""
        with self.conn.pipeline() as pipe:
            for item in items:
                self._enqueue(item, pipe)
            pipe.execute()

    def _enqueue(self, item: Dispatch, pipe: redis.client.Pipeline) -> None:
        queue = self.queue(item.queue)
        # timeout=-1: durable times activities itself; result_ttl=0: the outcome lives in history.
        meta = {"durable_home": item.home} if item.home else None
        if item.at is not None and item.at > clock.now():
            job = queue.create_job(
                item.func, args=item.args, timeout=-1, result_ttl=0, description=item.description,
                status=JobStatus.SCHEDULED, meta=meta,
            )
            # RQ stores whole seconds and fires when now >= that second: round up so a
            # timer never fires early. Then the exact time as the score: every durable
            # worker promotes due jobs by it (RQ's scheduler compares whole seconds with
            # it, so it never fires early either), so a timer is not up to 1 s late.
            when = datetime.fromtimestamp(math.ceil(item.at), tz=UTC)
            queue.schedule_job(job, when, pipeline=pipe)
            pipe.zadd(ScheduledJobRegistry(queue=queue).key, {job.id: item.at})
        else:
            job = queue.create_job(item.func, args=item.args, timeout=-1, result_ttl=0, description=item.description,
                                   meta=meta)
            queue.enqueue_job(job, pipeline=pipe, at_front=item.front)
        if item.home:
            # A plain field the rehome script can read, and the own queue (re)listed in the
            # same write, so that a job routed to a worker that just died is never missed.
            pipe.hset(job.key, "durable_home", item.home)
            pipe.sadd(self.sticky_key, item.queue)
