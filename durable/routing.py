"""Where a step's jobs go, and the per-process state the steps of one worker share.

The job paths (``durable.runtime.advance`` ...) are stored in RQ jobs, so they
are a contract. ``durable.Worker`` tells the job functions, through
``use_cache`` and ``lease_job``, which generator cache and own queue it has
and which job's lease it holds; a step reads that here to keep its run warm,
route the run's next jobs to this worker, and end the lease in its last commit.
The slots of ``durable.Limit``s an attempt holds are listed here too, so that
the worker's keeper renews them with the lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from . import clock
from .cache import GeneratorCache
from .events import CancelRequested
from .records import Dispatch, Meta
from .store import Store

__all__ = [
    "ADVANCE", "RUN_ACTIVITY", "FIRE_TIMER", "advance_dispatch", "wake_dispatch", "use_cache", "lease_job",
    "lease_released", "worker_state", "request_cancel", "held_limits", "own_queue_for",
]

ADVANCE = "durable.runtime.advance"
RUN_ACTIVITY = "durable.runtime.run_activity"
FIRE_TIMER = "durable.runtime.fire_timer"
def advance_dispatch(workflow_id: str, run_id: str, queue: str) -> Dispatch:
    return Dispatch(ADVANCE, (workflow_id, run_id), queue, description=f"durable advance {workflow_id}")


# The worker that runs jobs in this process (durable.Worker sets it): its generator cache
# and its Store, reused across jobs instead of rebuilt per job; the lease of the job it runs
# and that lease's length; the limit slots the running attempt holds, as (limit, holder).
worker_state: dict[str, Any] = {"cache": None, "stores": {}, "lease": None, "released": False, "own": None,
                                "serves": None, "lease_ttl": None, "limits": []}


def use_cache(cache: GeneratorCache | None, own_queue: str | None = None,
              serves: Iterable[str] | None = None) -> None:
    """Make the job functions in this process keep suspended runs in ``cache``, and route
    the next steps of those runs to ``own_queue`` (this worker's own queue), for runs
    whose queue is among ``serves`` (the queues the worker serves; None: any)."""
    worker_state["cache"] = cache
    worker_state["own"] = own_queue if cache is not None and cache.size else None
    worker_state["serves"] = frozenset(serves) if serves is not None else None


def own_queue_for(queue: str) -> str | None:
    """This worker's own queue, if the jobs of a run on ``queue`` may follow the run here.

    Only when the worker serves ``queue`` itself: a worker of a named queue (``slack``)
    runs a workflow's step when its activity finishes, but must not take over the
    workflow's other activities and wake-ups, which belong to the workers of its queue.
    """
    own = worker_state["own"]
    serves = worker_state["serves"]
    return cast(str, own) if own and (serves is None or queue in serves) else None


def wake_dispatch(store: Store, workflow_id: str, meta: Meta) -> Dispatch:
    """An ``advance`` job for ``meta``'s run: to the worker that keeps its generator if it
    is alive (a cache hit there), else to the workflow's queue."""
    if meta.owner and store.is_alive(meta.owner):
        return Dispatch(ADVANCE, (workflow_id, meta.run_id), meta.owner, home=meta.queue,
                        description=f"durable advance {workflow_id}")
    return advance_dispatch(workflow_id, meta.run_id, meta.queue)


def lease_job(job_id: str | None, ttl: float | None = None) -> None:
    """Tell the job functions which job's lease the worker holds (None: none) and for how
    long each renewal keeps it (the worker's keeper renews it, and the job's limit slots)."""
    worker_state["lease"] = job_id
    worker_state["released"] = False
    worker_state["lease_ttl"] = ttl if job_id is not None else None


def held_limits() -> list[tuple[str, str]]:
    """The limit slots, as (limit name, holder), that the running attempt holds (a copy:
    the keeper thread reads it while the job changes it)."""
    return list(worker_state["limits"])


def lease_released() -> bool:
    """Whether the last job's final commit already ended its lease."""
    return bool(worker_state["released"])


def request_cancel(store: Store, workflow_id: str, reason: str = "") -> bool:
    """Ask a running workflow to cancel: ``Cancelled`` is raised at its current ``yield``.

    Returns False when it was asked already. Raises ``WorkflowNotFound`` for an
    unknown id or one that has ended.
    """
    from_events = CancelRequested(time=clock.now(), reason=reason)
    return store.send_to_running(
        workflow_id, from_events, "cancel",
        lambda meta: wake_dispatch(store, workflow_id, meta),
        meta_fields={"cancel_requested": "1"},
        skip=lambda meta: meta.cancel_requested,
    )
