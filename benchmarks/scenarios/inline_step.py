"""Inline activity step vs DBOS on SQLite, each at a stated durability setting.

durable: a workflow of N inline activities (``@durable.activity(inline=True)``):
one RQ job runs them all, committing each result (compare-and-append, one
MULTI/EXEC) before the next. Cost per step = (``client.start`` + the job's
execution time) / N, measured on two redis-servers side by side:
``appendfsync always`` (every commit fsynced, compared with DBOS stock:
SQLite rollback journal, ``synchronous=FULL``) and ``appendfsync everysec``
(compared with DBOS tuned: WAL, ``synchronous=NORMAL``). DBOS: one workflow of N
steps called in its own process; cost per step = its wall time / N.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import flows
from ..common import Context, RedisServer, Row, Skip, Stats, TimedDurableWorker, burst, fmt_seconds, timer
from ..peers.dbos_peer import DbosPeer

NAME = "inline_step"
TITLE = "Inline activity step vs DBOS on SQLite"
TARGET_SECONDS = 0.25e-3
TARGET_VS = {"always": ("stock", 6.0), "everysec": ("tuned", 2.5)}


def run(ctx: Context) -> dict[str, Any]:
    n = ctx.size(20, 200)
    ctx.progress.begin(NAME, ctx.reps + 1)
    servers = {fsync: RedisServer(fsync).start() for fsync in TARGET_VS}
    peers: dict[str, DbosPeer] = {}
    skipped: list[str] = []
    settings: dict[str, Any] = {"steps_per_run": n}
    try:
        for mode, _ in TARGET_VS.values():
            try:
                peers[mode] = DbosPeer(mode, ctx.scratch).start()
                settings[f"dbos_{mode}"] = peers[mode].settings
            except Skip as exc:
                skipped.append(f"DBOS {mode}: {exc}")
                ctx.progress.note(f"skipping DBOS {mode}: {exc}")
        conns = {fsync: server.client() for fsync, server in servers.items()}
        ours = {fsync: Stats() for fsync in servers}
        floors = {fsync: Stats() for fsync in servers}  # one write round trip: what fsync alone costs
        theirs = {mode: Stats() for mode in peers}
        for conn in conns.values():
            _inline_step(conn, 5)  # warm-up
        ctx.progress.advance("warmed up")
        for rep in range(ctx.reps):
            for fsync, conn in conns.items():
                ours[fsync].add(_inline_step(conn, n))
                floors[fsync].add(_write_round_trip(conn))
            for mode, peer in peers.items():
                theirs[mode].add(peer.run(n) / n)
            ctx.progress.advance(f"rep {rep + 1}: " + ", ".join(
                [f"durable {k} {fmt_seconds(v.values[-1])}" for k, v in ours.items()]
                + [f"DBOS {k} {fmt_seconds(v.values[-1])}" for k, v in theirs.items()]))
        for conn in conns.values():
            conn.close()
        settings["redis"] = next(iter(servers.values())).version()
    finally:
        for peer in peers.values():
            peer.close()
        for server in servers.values():
            server.stop()

    rows: list[Row] = []
    for fsync, (mode, factor) in TARGET_VS.items():
        mine = ours[fsync].median
        row = Row(metric=f"inline activity step (Redis appendfsync {fsync})", durable=fmt_seconds(mine),
                  target=f"≤ {fmt_seconds(TARGET_SECONDS)}", met=mine <= TARGET_SECONDS,
                  values={"durable": ours[fsync].to_dict()})
        if mode in theirs:
            figure = theirs[mode].median
            speedup = figure / mine
            row.peer, row.peer_figure = peers[mode].label, fmt_seconds(figure)
            row.ratio = f"{speedup:.2f}× faster (DBOS ÷ durable)"
            row.target += f" and ≥ {factor:g}× faster than DBOS {mode}"
            row.met = mine <= TARGET_SECONDS and speedup >= factor
            row.values[f"dbos_{mode}"] = theirs[mode].to_dict()
        rows.append(row)
        floor = floors[fsync].median
        rows.append(Row(metric=f"… floor: one write round trip (RPUSH of 300 B over the commit's connection, "
                               f"appendfsync {fsync})",
                        durable=fmt_seconds(floor), target="(context)",
                        ratio=f"{floor / TARGET_SECONDS:.0%} of the {fmt_seconds(TARGET_SECONDS)} budget; "
                              f"the step's own work: {fmt_seconds(mine - floor)}",
                        values={"floor": floors[fsync].to_dict()}))
    return {"rows": [r.to_dict() for r in rows], "skipped": skipped, "settings": settings}


def _inline_step(conn: Any, n: int) -> float:
    """Seconds per inline step: starting the workflow plus the one job that runs it, over N."""
    from durable import Client

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    client = Client(conn)
    with timer() as started:
        handle = client.start(flows.inline_sequence, n, queue=queue)
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=30)
    burst(worker)
    if handle.status() != "completed" or len(worker.marks) != 1:
        raise RuntimeError(f"inline workflow: {handle.status()} after {len(worker.marks)} jobs (expected 1)")
    _, start, end = worker.marks[0]
    return (started[0] + end - start) / n


def _write_round_trip(conn: Any, count: int = 500) -> float:
    """Seconds per RPUSH of 300 bytes over the kind of connection a commit uses (``durable.line``):
    the least one durable commit can cost at this setting (with ``always`` the server fsyncs
    the AOF before it answers)."""
    from durable.line import Line

    line = Line(conn)
    key = f"bench-floor-{uuid.uuid4().hex[:8]}"
    payload = b"x" * 300
    with timer() as took:
        for _ in range(count):
            line.call("RPUSH", key, payload)
    line.close()
    conn.delete(key)
    return took[0] / count
