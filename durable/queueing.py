"""How a durable worker takes jobs from several queues: RQ's dequeue, one queue at a time.

Kept apart from the worker because it is the one piece of RQ's loop durable replaces
wholesale, and because the leases and the recovery sweep rely on what it leaves in
Redis (a job id in the queue's intermediate list from dequeue until the lease).
"""

from __future__ import annotations

import time
from typing import Any

from rq.exceptions import DequeueTimeout
from rq.queue import Queue

__all__ = ["DurableQueue", "OWN_QUEUE_PREFIX"]

OWN_QUEUE_PREFIX = "durable-w-"


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
