"""The RQ job functions that move workflows forward.

Three jobs, all found by RQ through their import path:

- ``advance(id, run)``: replay and dispatch whatever the workflow asks next.
- ``run_activity(id, run, seq, attempt)``: run one attempt of a queued
  activity (or the retry of an inline one), record its outcome and, in the
  same job and the same commit, continue the workflow: no second hop.
- ``fire_timer(id, run, seq)``: record that a durable timer (or a signal
  wait's timeout) fired, and continue.

Every job is safe to run twice or concurrently: each one replays, decides,
and commits with a compare-and-append (``Store.commit``). If another runner
committed first, the loser replays again and finds its work already recorded.
"""

from __future__ import annotations

from typing import cast

from rq import get_current_job

from .cache import GeneratorCache
from .observability import StepScope
from .routing import (
    ADVANCE,
    FIRE_TIMER,
    RUN_ACTIVITY,
    advance_dispatch,
    lease_job,
    lease_released,
    request_cancel,
    use_cache,
    wake_dispatch,
    worker_state,
)
from .step import KEEP_RUNS_ENV, Step
from .store import Store

__all__ = [
    "advance", "run_activity", "fire_timer", "advance_dispatch", "wake_dispatch", "use_cache", "lease_job",
    "lease_released", "request_cancel", "Step", "ADVANCE", "RUN_ACTIVITY", "FIRE_TIMER", "KEEP_RUNS_ENV",
]


def _store() -> Store:
    job = get_current_job()
    if job is None:
        raise RuntimeError("durable's job functions run inside an RQ worker (durable worker)")
    stores: dict[int, Store] = worker_state["stores"]
    store = stores.get(id(job.connection))
    if store is None or store.conn is not job.connection:
        store = stores[id(job.connection)] = Store(job.connection)
    return store


def _cache() -> GeneratorCache | None:
    return cast(GeneratorCache | None, worker_state["cache"])


def advance(workflow_id: str, run_id: str) -> None:
    """RQ job: continue a workflow from its history."""
    with StepScope(workflow_id, run_id, "advance"):
        Step(_store(), workflow_id, run_id, cache=_cache()).run()


def run_activity(workflow_id: str, run_id: str, seq: int, attempt: int) -> None:
    """RQ job: run attempt ``attempt`` of the activity at ``seq``, then continue the workflow."""
    with StepScope(workflow_id, run_id, "activity", seq, attempt):
        Step(_store(), workflow_id, run_id, activity=(seq, attempt), cache=_cache()).run()


def fire_timer(workflow_id: str, run_id: str, seq: int) -> None:
    """RQ job: fire the durable timer at ``seq`` (never before its deadline), then continue."""
    with StepScope(workflow_id, run_id, "timer", seq):
        Step(_store(), workflow_id, run_id, timer=seq, cache=_cache()).run()
