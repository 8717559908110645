"""Warm step cost vs history length: is a step O(1) in the history it already has?

For each length L, a workflow of L + K queued activities gets a synthesized
history of L completed activities (written with ``Store.commit``, not run),
then an in-process ``durable.Worker`` advances it for real: one ``advance``
job, then K ``run_activity`` jobs. The cost per step is the steady-state time
between job ends after the first job, so a generator cache (when
``durable.Worker`` has one, the ``cached`` variant) has been filled by the
first job. Without a cache every step loads and replays the whole history.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import durable

from .. import flows
from ..common import Context, RedisServer, Row, Stats, TimedDurableWorker, burst, fmt_seconds, steady_interval

NAME = "warm_step"
TITLE = "Warm step cost vs history length"
TARGET = 1.2
CACHE_SIZE = 1024


def variants() -> dict[str, dict[str, Any]]:
    """Worker keyword arguments per variant: ``cached`` only once ``durable.Worker`` takes ``cache_size``."""
    if "cache_size" in inspect.signature(durable.Worker.__init__).parameters:
        return {"uncached": {"cache_size": 0}, "cached": {"cache_size": CACHE_SIZE}}
    return {"uncached": {}}


def run(ctx: Context) -> dict[str, Any]:
    lengths = ctx.size([10, 100], [10, 100, 1000, 10_000])
    steps = ctx.size(4, 20)  # steady state: the first steps after the cold one absorb its packing writes
    kinds = variants()
    ctx.progress.begin(NAME, ctx.reps * len(lengths))
    stats = {kind: {length: Stats() for length in lengths} for kind in kinds}
    with RedisServer("everysec") as server:
        conn = server.client()
        for options in kinds.values():
            _step_cost(conn, 5, 3, options)  # warm-up
        for rep in range(ctx.reps):
            for length in lengths:
                for kind, options in kinds.items():
                    stats[kind][length].add(_step_cost(conn, length, steps, options))
                ctx.progress.advance(f"rep {rep + 1}, L={length}: " + ", ".join(
                    f"{kind} {fmt_seconds(stats[kind][length].values[-1])}" for kind in kinds))
        conn.close()
    short, long = min(lengths), max(lengths)
    rows = []
    for kind in kinds:
        ratio = stats[kind][long].median / stats[kind][short].median
        judged = kind == "cached" or len(kinds) == 1
        rows.append(Row(
            metric=f"warm step at history {long:,} vs {short} ({kind}"
                   + (", durable.Worker has no generator cache yet)" if len(kinds) == 1 else ")"),
            durable=f"{fmt_seconds(stats[kind][long].median)} vs {fmt_seconds(stats[kind][short].median)}",
            ratio=f"{ratio:.2f}× (L={long:,} ÷ L={short})",
            target=f"≤ {TARGET}× (O(1))" if judged else "(context)",
            met=(ratio <= TARGET) if judged else None,
            values={str(length): stats[kind][length].to_dict() for length in lengths},
        ))
    series = {kind: {str(length): stats[kind][length].median for length in lengths} for kind in kinds}
    return {"rows": [r.to_dict() for r in rows], "series": {"step_cost_vs_history": series},
            "settings": {"lengths": lengths, "steps_timed": steps, "variants": kinds,
                         "history_length_unit": "recorded activities (2 events each)"}}


def _step_cost(conn: Any, length: int, steps: int, options: dict[str, Any]) -> float:
    from durable import Client
    from durable.store import Store

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    handle = Client(conn).start(flows.sequence, length + steps, queue=queue)
    if not Store(conn).commit(handle.id, 0, flows.sequence_history(length)):
        raise RuntimeError("could not store the synthesized history")
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=60, **options)
    burst(worker)
    if handle.status() != "completed" or len(worker.marks) != steps + 1:
        raise RuntimeError(f"workflow did not finish: {handle.status()} after {len(worker.marks)} jobs")
    conn.delete(*[key for key in conn.scan_iter(match=f"durable:{{{handle.id}}}:*")])
    return steady_interval(worker.marks)
