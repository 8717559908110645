"""Throughput with I/O-bound activities vs the number of worker processes.

M workflows of A queued activities that each wait 20 ms (``time.sleep``), run by
1, 2, 4 and 8 ``durable worker`` subprocesses on one redis-server. Wall time
from the first ``client.start`` to the last result; activities per second =
M × A / wall. Linear scaling would multiply the 1-worker rate by the number of
workers; the scaling ratio is rate(W) / (W × rate(1)). The CPU the workers,
redis-server and this process used during each round is recorded too: on a
2-core machine the per-step CPU cost, not the 20 ms waits, caps how far more
processes help. Each worker publishes its generator cache counters; the hit
rate over all of them shows whether wake-ups reach the worker that keeps the
generator as workers are added.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

from rq import Worker as RQWorker

from .. import flows
from ..common import Context, RedisServer, Row, Stats, cpu_seconds, spawn, stop

NAME = "throughput"
TITLE = "Throughput with I/O-bound activities vs worker processes"
TARGET = 0.8


def run(ctx: Context) -> dict[str, Any]:
    counts = ctx.size([1, 2], [1, 2, 4, 8])
    workflows, activities = ctx.size((4, 3), (32, 8))
    ctx.progress.begin(NAME, ctx.reps * len(counts))
    rates: dict[int, Stats] = {count: Stats() for count in counts}
    hit_rates: dict[int, float] = {}  # generator cache hits / steps, over every worker and round
    busy: dict[int, Stats] = {count: Stats() for count in counts}  # CPU cores busy during a round
    with RedisServer("everysec") as server:
        conn = server.client()
        for count in counts:
            queue = f"bench-tp-{uuid.uuid4().hex[:8]}"
            procs = [spawn([sys.executable, "-m", "durable", "worker", "--url", server.url, "--queue", queue,
                            "--import", "benchmarks.flows", "--log-level", "WARNING"],
                           ctx.scratch / f"throughput-{count}-{i}.log") for i in range(count)]
            try:
                _wait_for_workers(conn, queue, count, procs)
                _round(conn, queue, count, 1)  # warm-up: every worker imports and connects
                groups = [proc.pid for proc in procs] + [server.proc.pid if server.proc else 0]
                for rep in range(ctx.reps):
                    used, own = cpu_seconds(groups), os.times()
                    wall = _round(conn, queue, workflows, activities)
                    after = os.times()
                    used = cpu_seconds(groups) - used + (after.user - own.user) + (after.system - own.system)
                    rates[count].add(workflows * activities / wall)
                    busy[count].add(used / wall)
                    ctx.progress.advance(f"{count} workers, rep {rep + 1}: {rates[count].values[-1]:.1f} act/s, "
                                         f"{busy[count].values[-1]:.2f} cores busy")
            finally:
                for proc in procs:
                    stop(proc)  # SIGTERM: each worker publishes its final counters as it leaves
            hits, misses = _cache_counters(conn, procs)  # the warm-up round included
            hit_rates[count] = hits / (hits + misses) if hits + misses else 0.0
        conn.close()
    base = rates[counts[0]].median
    scaling = {count: rates[count].median / (count * base) for count in counts}
    top = max(counts)
    ideal = 1 / flows.IO_SECONDS
    cpu_per_activity = busy[top].median / rates[top].median
    rows = [Row(
        metric=f"throughput, {flows.IO_SECONDS * 1e3:g} ms I/O activities, 1 → {top} worker processes "
               f"({_cpus()} CPUs; {busy[top].median:.2f} cores busy at {top})",
        durable=f"{base:.1f} → {rates[top].median:.1f} activities/s",
        ratio=f"{scaling[top]:.2f} of linear",
        target=f"≥ {TARGET} × linear",
        met=scaling[top] >= TARGET,
        values={str(count): rates[count].to_dict() for count in counts},
    ), Row(
        metric="… 1 worker's rate vs a worker that only sleeps",
        durable=f"{base:.1f} activities/s", peer_figure=f"{ideal:.0f} activities/s",
        ratio=f"{base / ideal:.2f} (step overhead on top of the 20 ms)", target="(context)",
    ), Row(
        metric=f"… CPU per activity at {top} workers (workers + redis-server + client)",
        durable=f"{cpu_per_activity * 1e3:.1f} ms", target="(context)",
        peer_figure=f"caps {_cpus() / cpu_per_activity:.0f} activities/s on {_cpus()} CPUs",
        values={str(count): busy[count].to_dict() for count in counts},
    )]
    rows.append(Row(
        metric=f"… generator cache hit rate, {' / '.join(str(c) for c in counts)} worker processes "
               "(steps that found their generator in memory)",
        durable=" / ".join(f"{hit_rates[c]:.1%}" for c in counts), target="(context: stays high with many workers)",
        values={str(count): hit_rates[count] for count in counts},
    ))
    series = {"activities_per_second": {str(c): rates[c].median for c in counts},
              "scaling": {str(c): scaling[c] for c in counts},
              "cores_busy": {str(c): busy[c].median for c in counts}}
    return {"rows": [r.to_dict() for r in rows], "series": {"throughput_vs_workers": series},
            "settings": {"workers": counts, "workflows": workflows, "activities_each": activities,
                         "io_seconds": flows.IO_SECONDS, "cpus": _cpus()}}


def _cache_counters(conn: Any, procs: list[Any]) -> tuple[int, int]:
    """(hits, misses) of the generator caches of these worker processes, as they published them."""
    from durable.store import Store

    pids = {str(proc.pid) for proc in procs}
    mine = [s for s in Store(conn).worker_stats() if s.get("pid") in pids]
    return sum(int(s["cache_hits"]) for s in mine), sum(int(s["cache_misses"]) for s in mine)


def _cpus() -> int:
    return os.cpu_count() or 1


def _wait_for_workers(conn: Any, queue: str, count: int, procs: list[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = [w for w in RQWorker.all(connection=conn) if queue in w.queue_names()]
        if len(ready) >= count:
            return
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{len(ready)}/{count} workers came up (exited: {dead}); see the logs")
        time.sleep(0.1)


def _round(conn: Any, queue: str, workflows: int, activities: int) -> float:
    from durable import Client

    client = Client(conn)
    start = time.perf_counter()
    handles = [client.start(flows.io_sequence, activities, queue=queue) for _ in range(workflows)]
    for handle in handles:
        if handle.result(timeout=600) != activities:
            raise RuntimeError(f"workflow {handle.id} returned something else")
    return time.perf_counter() - start
