"""What waiting workflows cost: Redis memory and worker memory.

Workflows that each wait on a signal (``durable.wait_signal("go")``) are started
on one redis-server and advanced to their wait by one ``durable worker``
subprocess; Redis ``INFO memory`` ``used_memory`` and the worker's RSS (its
whole process group) are read before and after, at two counts (cumulative), and
once more after every workflow got its signal and finished (a finished workflow
keeps its meta hash and history until deleted).

"Bounded" is judged as: Redis costs the same per waiting workflow at both
counts (the marginal cost from the small to the large count within 25 % of
the average: linear, nothing quadratic), and the worker's RSS does
not grow with the number of waiting workflows (under 8 MiB from the small to the
large count: nothing is kept per workflow in the worker).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rq import Queue
from rq.registry import StartedJobRegistry

from .. import flows
from ..common import Context, RedisServer, Row, fmt_bytes, group_members, have, spawn, stop
from .throughput import _wait_for_workers

NAME = "memory"
TITLE = "Memory of waiting workflows"
LINEAR_TOLERANCE = 0.25
WORKER_GROWTH = 8 << 20


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (RQ's scheduler, if forked)."""
    if have("psutil"):
        import psutil

        proc = psutil.Process(pid)
        return int(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
    total = 0
    for member in group_members(pid):  # the worker leads its own process group
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def run(ctx: Context) -> dict[str, Any]:
    counts = ctx.size([50, 200], [100, 1000])
    ctx.progress.begin(NAME, len(counts) + 2)
    from durable import Client
    from durable.store import Store

    with RedisServer("everysec") as server:
        conn = server.client()
        client, store = Client(conn), Store(conn)
        queue = f"bench-mem-{uuid.uuid4().hex[:8]}"
        worker = spawn([sys.executable, "-m", "durable", "worker", "--url", server.url, "--queue", queue,
                        "--import", "benchmarks.flows", "--log-level", "WARNING"], ctx.scratch / "memory-worker.log")
        try:
            _wait_for_workers(conn, queue, 1, [worker])
            warm = client.start(flows.waiter, queue=queue)  # every import done, every script loaded
            _settle(conn, store, queue, [warm.id])
            warm.signal("go", 0)
            warm.result(timeout=60)
            time.sleep(0.5)
            base_redis, base_rss = server.used_memory(), rss(worker.pid)
            ctx.progress.advance(f"baseline: Redis {fmt_bytes(base_redis)}, worker RSS {fmt_bytes(base_rss)}")
            ids: list[str] = []
            points: dict[str, dict[str, float]] = {}
            for count in counts:
                ids += [client.start(flows.waiter, queue=queue).id for _ in range(count - len(ids))]
                _settle(conn, store, queue, ids)
                redis_delta, rss_now = server.used_memory() - base_redis, rss(worker.pid)
                points[str(count)] = {"redis_bytes": redis_delta, "redis_bytes_per_workflow": redis_delta / count,
                                      "worker_rss": rss_now, "worker_rss_delta": rss_now - base_rss,
                                      "keys_bytes_per_workflow": _key_bytes(conn, store, ids[-20:])}
                ctx.progress.advance(f"{count} waiting: Redis +{fmt_bytes(redis_delta)} "
                                     f"({fmt_bytes(redis_delta / count)} each), worker RSS {fmt_bytes(rss_now)}")
            for workflow_id in ids:
                client.signal(workflow_id, "go", 1)
            for workflow_id in ids:
                client.get(workflow_id).result(timeout=600)
            time.sleep(0.5)
            done_delta = server.used_memory() - base_redis
            ctx.progress.advance(f"all finished: Redis +{fmt_bytes(done_delta)}")
        finally:
            stop(worker)
            conn.close()

    small, large = points[str(counts[0])], points[str(counts[-1])]
    per_large = large["redis_bytes_per_workflow"]
    marginal = (large["redis_bytes"] - small["redis_bytes"]) / (counts[-1] - counts[0])
    linear = abs(marginal - per_large) <= LINEAR_TOLERANCE * per_large
    growth = large["worker_rss"] - small["worker_rss"]
    top = counts[-1]
    rows = [
        Row(metric=f"{top:,} waiting workflows: Redis memory",
            durable=f"{fmt_bytes(large['redis_bytes'])} ({fmt_bytes(per_large)} per workflow; marginal "
                    f"{fmt_bytes(marginal)} from {counts[0]} to {top}; its own keys "
                    f"{fmt_bytes(large['keys_bytes_per_workflow'])})",
            target="stated; linear (marginal = average ± 25 %)", met=linear, values=points),
        Row(metric=f"{top:,} waiting workflows: worker RSS",
            durable=f"{fmt_bytes(large['worker_rss'])} (+{fmt_bytes(large['worker_rss_delta'])} over idle; "
                    f"+{fmt_bytes(growth)} from {counts[0]} to {top})",
            target=f"stated; flat (< {fmt_bytes(WORKER_GROWTH)} growth)", met=growth < WORKER_GROWTH),
        Row(metric=f"{top:,} finished workflows: Redis memory kept",
            durable=f"{fmt_bytes(done_delta)} ({fmt_bytes(done_delta / top)} per workflow, until deleted)",
            target="(context)"),
    ]
    return {"rows": [r.to_dict() for r in rows],
            "settings": {"counts": counts, "rss_source": "psutil" if have("psutil") else "/proc",
                         "finished_bytes": done_delta}}


def _key_bytes(conn: Any, store: Any, ids: list[str]) -> float:
    """Average ``MEMORY USAGE`` of a workflow's own keys (meta hash and history list)."""
    total = 0
    for workflow_id in ids:
        for key in (store.meta_key(workflow_id), store.history_key(workflow_id)):
            total += int(conn.memory_usage(key, samples=0) or 0)
    return total / max(len(ids), 1)


def _settle(conn: Any, store: Any, queue: str, ids: list[str], timeout: float = 600) -> None:
    """Wait until every workflow in ``ids`` has recorded its wait and no job is queued or running."""
    deadline = time.monotonic() + timeout
    rq_queue = Queue(queue, connection=conn)
    started = StartedJobRegistry(queue=rq_queue)
    while time.monotonic() < deadline:
        pipe = conn.pipeline(transaction=False)
        for workflow_id in ids:
            pipe.llen(store.history_key(workflow_id))
        waiting = sum(1 for length in pipe.execute() if length >= 1)
        if waiting == len(ids) and rq_queue.count == 0 and started.count == 0:
            time.sleep(0.3)  # let the worker finish its bookkeeping after the last job
            return
        time.sleep(0.2)
    raise RuntimeError(f"workflows did not reach their wait within {timeout} s")
