"""Running an attempt under its activity's ``durable.Limit``, or putting it off.

A step calls ``run_limited`` where it would call ``run_attempt``. Why the
check sits there, right before user code runs, and not at dispatch: only then
is an attempt really about to start (a queued job may wait, be recovered, run
twice), and it is the one place queued and inline activities share.

The slot and the start are taken in one Lua script (``Store.take_limit``), so
a refused start never keeps a slot. A refused attempt is not run and not
waited for in the worker, which would hold a worker hostage to a limit: it
comes back as an outcome with no events and a ``retry_at`` (when the next
start is allowed, or after a short random pause when every slot is held), and
the step schedules the *same* attempt then, exactly as it does for an
activity whose code is missing here. So waiting never uses up a retry.

The slot's holder is unique to this execution of the attempt, so that a
duplicate of the job cannot take over a slot, and it expires: the worker's
keeper renews it with the job's lease, and a worker that dies stops renewing,
so its slot frees itself within the lease.

Time is durable's clock (``clock.now``), the same as leases use: the testing
kit's virtual clock then spaces starts in virtual time, and workers on several
hosts need the synchronised clocks that leases already need.
"""

from __future__ import annotations

import logging
import random
import uuid

import redis

from . import clock
from .activities import AttemptOutcome, run_attempt
from .commands import Limit
from .context import ActivityInfo
from .events import ActivityScheduled
from .registry import limit_of
from .routing import worker_state
from .upkeep import Upkeep

__all__ = ["run_limited", "BUSY_PAUSE", "UNRENEWED_TTL"]

log = logging.getLogger("durable.runtime")

BUSY_PAUSE = (0.2, 1.0)  # seconds, drawn at random: when every slot is held, try again within this
UNRENEWED_TTL = 600.0  # seconds a slot lasts when no durable.Worker keeper renews it
_SPREAD = 0.1  # at most this much (and a quarter of the interval) added at random to a rate wait


def run_limited(store: Upkeep, scheduled: ActivityScheduled, info: ActivityInfo) -> AttemptOutcome:
    """Run the attempt if its activity's limit lets it start now, holding a slot while it
    runs; else the outcome that schedules the same attempt for later."""
    limit = limit_of(scheduled.activity)
    if limit is None:
        return run_attempt(scheduled, info)
    holder = f"{info.workflow_id}#{info.seq}#{info.attempt}#{uuid.uuid4().hex[:8]}"
    now = clock.now()
    refused, at = store.take_limit(
        limit.name, holder, now=now, expiry=now + _ttl(scheduled), concurrency=limit.concurrency or 0,
        interval=limit.interval)
    if refused is not None:
        return _later(limit, refused, at, now)
    if not limit.concurrency:  # a rate alone holds no slot
        return run_attempt(scheduled, info)
    held = (limit.name, holder)
    worker_state["limits"].append(held)
    try:
        return run_attempt(scheduled, info)
    finally:
        worker_state["limits"].remove(held)
        try:
            store.release_limit(limit.name, holder)
        except redis.RedisError as exc:  # the outcome matters more; the slot lapses by itself
            log.warning("could not give back a slot of limit %s (%s): it frees itself when it expires",
                        limit.name, exc)


def _ttl(scheduled: ActivityScheduled) -> float:
    """How long a slot lasts unless renewed: a worker's keeper renews it every fraction of
    its lease, so the lease; without one, long enough for the attempt to end."""
    lease = worker_state["lease_ttl"]
    if lease:
        return float(lease)
    timeout = scheduled.activity_options().timeout
    return max(UNRENEWED_TTL, (timeout or 0.0) + 60.0)


def _later(limit: Limit, refused: str, at: float, now: float) -> AttemptOutcome:
    if refused == "rate":
        # Spread a little, so that attempts refused together do not all come back at once.
        retry_at = max(at, now) + random.uniform(0.0, min(_SPREAD, limit.interval / 4))
        why = f"limit {limit.name!r}: next start allowed in {max(at - now, 0.0):.2f} s"
    else:
        retry_at = now + random.uniform(*BUSY_PAUSE)
        why = f"limit {limit.name!r}: all {limit.concurrency} slot(s) held"
    log.debug("not starting yet, %s", why)
    return AttemptOutcome([], retry_at=retry_at, limited=why)
