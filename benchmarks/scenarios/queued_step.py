"""Queued activity step vs a raw RQ chain hop (and a Celery chain hop), same redis-server.

durable: a workflow of N sequential queued activities; each step is one RQ job
(``run_activity``: run the activity, commit its result and the next job in one
compare-and-append). Raw RQ: a job that enqueues the next job, with the same
job options (``result_ttl=0``, no RQ timeout). Both run in an in-process
SimpleWorker (``durable.Worker`` is one) in burst mode; the cost per step is
the steady-state time between consecutive job ends (worker start-up and the
first job excluded). A workflow of N steps replays a history that grows with
every step (no generator cache yet), so the suite also times steps of short
workflows (10 activities each, many of them, history ≤ 10). Celery: a chain of N tasks on a solo worker subprocess,
wall time from ``apply_async`` to the last result, divided by N.
"""

from __future__ import annotations

import uuid
from typing import Any

from rq import Queue

from .. import flows
from ..common import (
    Context,
    RedisServer,
    Row,
    Skip,
    Stats,
    TimedDurableWorker,
    TimedSimpleWorker,
    burst,
    fmt_seconds,
    steady_interval,
    version,
)
from ..peers.celery_peer import CeleryPeer

NAME = "queued_step"
TITLE = "Queued activity step vs raw RQ chain hop"
TARGET = 1.1
SHORT = 10  # activities per workflow in the short-history variant


def run(ctx: Context) -> dict[str, Any]:
    n = ctx.size(20, 200)
    ctx.progress.begin(NAME, ctx.reps + 1)
    with RedisServer("everysec") as server:
        conn = server.client()
        celery: CeleryPeer | None = None
        skipped: list[str] = []
        try:
            celery = CeleryPeer(server.db_url(1), ctx.scratch).start()
        except Skip as exc:
            skipped.append(f"Celery: {exc}")
            ctx.progress.note(f"skipping Celery: {exc}")
        try:
            durable_stats, short_stats, rq_stats, celery_stats = Stats(), Stats(), Stats(), Stats()
            _durable_step(conn, 5), _short_steps(conn, 20), _rq_hop(conn, 5)  # warm-up: imports, connections
            ctx.progress.advance("warmed up")
            for rep in range(ctx.reps):
                # Alternate the order so that neither side always runs on a warmer machine.
                sides = [("durable", durable_stats, _durable_step), ("short", short_stats, _short_steps),
                         ("rq", rq_stats, _rq_hop)]
                for _, stats, measure in sides if rep % 2 == 0 else reversed(sides):
                    stats.add(measure(conn, n))
                if celery is not None:
                    celery_stats.add(celery.run(n) / n)
                ctx.progress.advance(f"rep {rep + 1}: durable {fmt_seconds(durable_stats.values[-1])}, "
                                     f"RQ {fmt_seconds(rq_stats.values[-1])}")
        finally:
            if celery is not None:
                celery.close()
            conn.close()
        durability = server.durability
        redis_version = server.version()
    peer = f"raw RQ {version('rq')} chain hop (SimpleWorker, same Redis, {durability})"
    rows = []
    for label, stats in ((f"queued activity step (workflow of {n} activities)", durable_stats),
                         (f"queued activity step (workflows of {SHORT}: history ≤ {SHORT})", short_stats)):
        ratio = stats.median / rq_stats.median
        rows.append(Row(metric=label, durable=fmt_seconds(stats.median), peer=peer,
                        peer_figure=fmt_seconds(rq_stats.median), ratio=f"{ratio:.2f}× (durable ÷ RQ)",
                        target=f"≤ {TARGET}× RQ hop", met=ratio <= TARGET,
                        values={"durable": stats.to_dict(), "rq": rq_stats.to_dict()}))
    if celery is not None:
        rows.append(Row(
            metric="queued activity step vs Celery",
            durable=fmt_seconds(durable_stats.median),
            peer=f"{celery.label}, {durability}",
            peer_figure=fmt_seconds(celery_stats.median),
            ratio=f"{durable_stats.median / celery_stats.median:.2f}× (durable ÷ Celery)",
            target="(context)",
            values={"celery": celery_stats.to_dict()},
        ))
    return {"rows": [r.to_dict() for r in rows], "skipped": skipped,
            "settings": {"steps_per_run": n, "redis": redis_version, "durability": durability,
                         "worker_logging": "WARNING (no per-job INFO lines, both sides)"}}


def _durable_step(conn: Any, n: int) -> float:
    from durable import Client

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    handle = Client(conn).start(flows.sequence, n, queue=queue)
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=30)
    burst(worker)
    if handle.status() != "completed" or len(worker.marks) != n + 1:
        raise RuntimeError(f"durable workflow did not finish in one burst: {handle.status()}, {len(worker.marks)}")
    return steady_interval(worker.marks)


def _short_steps(conn: Any, n: int) -> float:
    """Per step over many short workflows: from the end of the last first-step job (they all
    come first, FIFO) to the end of the last job, over the activity jobs in between."""
    from durable import Client

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    client = Client(conn)
    handles = [client.start(flows.sequence, SHORT, queue=queue) for _ in range(max(n // SHORT, 2))]
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=30)
    burst(worker)
    if any(handle.status() != "completed" for handle in handles):
        raise RuntimeError("a short durable workflow did not finish in one burst")
    last_first = max(i for i, mark in enumerate(worker.marks) if mark[0].endswith(".advance"))
    return steady_interval(worker.marks, skip=last_first + 1)


def _rq_hop(conn: Any, n: int) -> float:
    name = f"bench-rq-{uuid.uuid4().hex[:8]}"
    Queue(name, connection=conn).enqueue(flows.rq_hop, n, name, result_ttl=0, job_timeout=-1)
    worker = TimedSimpleWorker([name], connection=conn)
    burst(worker)
    if len(worker.marks) != n + 1:
        raise RuntimeError(f"raw RQ chain ran {len(worker.marks)} jobs, expected {n + 1}")
    return steady_interval(worker.marks)
