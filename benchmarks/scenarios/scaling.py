"""How far workers and one Redis primary scale: throughput from 1 to 16 worker processes,
Redis operations per step, and the ceiling of one primary estimated from them.

Three parts, each on its own throwaway redis-server (AOF on):

1. **Operations per step**, metered: workflows of 10 queued no-op activities,
   workflows of 10 inline ones, and the raw RQ chain hop, each run by an
   in-process worker in burst mode (``redis_meter``: ``INFO commandstats`` and
   ``INFO cpu`` deltas on the server, round trips and commands counted in
   redis-py). Per activity, the workflow's start and first step included. The
   server counts the commands Lua scripts run too; sent minus executed gives
   them. Repeated on ``appendfsync always`` for the wall time per step.
2. **Under load**: M workflows of 10 activities that each wait 20 ms
   (``flows.io_sequence``) on 1, 2, 4, 8, 16 ``durable worker`` subprocesses:
   activities/s, the ratio to linear, the CPU every process used (cores busy),
   redis-server's main thread (where commands run), and the generator cache hit
   rate the workers publish. Then the same workers idle for a few seconds: the
   load they put on Redis doing nothing (lease keeper, RQ scheduler, polling).
   At the top count, no-op activities as fast as the workers go.
3. **The ceiling**, estimated: one primary runs commands on one thread, so the
   steps per second it sustains is about one core (less a headroom) divided by
   the main-thread CPU per step, less what idle workers cost it; and with the
   1-worker rate of I/O-bound activities, how many worker processes reach it.
   Checked against the main thread's utilisation at the measured load. On a
   2-core machine the workers saturate the CPUs long before Redis: the ceiling
   is an extrapolation, stated as one.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import sys
import time
import uuid
from typing import Any

from rq import Queue

from .. import flows
from ..common import (
    Context,
    RedisServer,
    Row,
    TimedDurableWorker,
    TimedSimpleWorker,
    burst,
    cpu_seconds,
    fmt_seconds,
    spawn,
    stop,
    version,
)
from ..redis_meter import delta, metered, sample
from .throughput import _wait_for_workers

NAME = "scaling"
TITLE = "Scaling: throughput vs worker processes, Redis operations per step, one Redis primary's ceiling"
LENGTH = 10  # activities per workflow, in every part
HEADROOM = 0.7  # the share of one core a primary is planned to run at (spikes, AOF rewrites, replication)


def run(ctx: Context) -> dict[str, Any]:
    counts = ctx.size([1, 2, 4], [1, 2, 4, 8, 16])
    ctx.progress.begin(NAME, 1 + ctx.reps + len(counts) * (ctx.reps + 1) + ctx.reps)
    ops = _ops_per_step(ctx)
    load = _under_load(ctx, counts)
    ceiling = _ceiling(ops, load, counts)
    rows = _rows(ops, load, ceiling, counts)
    top = counts[-1]
    series = {"activities_per_second": {str(c): load["io"][c]["rate"] for c in counts},
              "scaling": {str(c): load["scaling"][c] for c in counts},
              "cores_busy": {str(c): load["io"][c]["cores_busy"] for c in counts},
              "redis_main_thread": {str(c): load["io"][c]["redis_main"] for c in counts},
              "cpus": _cpus(), "ceiling_estimate": ceiling["steps_headroom"], "headroom": HEADROOM,
              "cpu_cap": _cpus() / load["io"][top]["cpu_per_step"]}
    return {"rows": [r.to_dict() for r in rows], "series": {"scaling_vs_workers": series},
            "ops_per_step": ops, "under_load": {k: _keys_to_str(v) for k, v in load.items()}, "ceiling": ceiling,
            "settings": {"workers": counts, "activities_each": LENGTH, "io_seconds": flows.IO_SECONDS,
                         "headroom": HEADROOM, "cpus": _cpus(), "durability": "AOF appendfsync everysec "
                         "(and always, for the wall time per step)"}}


# -- part 1: Redis operations per step ---------------------------------------------------------


def _ops_per_step(ctx: Context) -> dict[str, dict[str, Any]]:
    workflows = ctx.size(4, 40)
    samples: dict[str, list[dict[str, Any]]] = {}
    with RedisServer("everysec") as everysec, RedisServer("always") as always:
        conns = {"everysec": everysec.client(), "always": always.client()}
        plan = [("queued", "everysec", _queued, flows.sequence), ("inline", "everysec", _queued, flows.inline_sequence),
                ("rq_hop", "everysec", _rq_hop, None), ("ping", "everysec", _pings, None),
                ("queued_always", "always", _queued, flows.sequence),
                ("inline_always", "always", _queued, flows.inline_sequence)]
        for _, fsync, work, workflow in plan:  # warm-up: imports, connections, script loads
            work(conns[fsync], 2, workflow)
        ctx.progress.advance("metered warm-up")
        for rep in range(ctx.reps):
            for label, fsync, work, workflow in plan if rep % 2 == 0 else reversed(plan):
                samples.setdefault(label, []).append(metered(conns[fsync], work, workflows, workflow).per_step())
            q, h = samples["queued"][-1], samples["rq_hop"][-1]
            ctx.progress.advance(f"rep {rep + 1}: queued step {q['commands']:.0f} commands, "
                                 f"{fmt_seconds(q['cpu_main'])} Redis CPU; RQ hop {h['commands']:.0f}, "
                                 f"{fmt_seconds(h['cpu_main'])}")
        for conn in conns.values():
            conn.close()
    return {label: _median_of(values) for label, values in samples.items()}


def _queued(conn: Any, workflows: int, workflow: Any) -> int:
    """Start ``workflows`` runs of ``workflow(LENGTH)`` and run them in an in-process worker;
    returns the activities run."""
    from durable import Client

    queue = f"bench-sc-{uuid.uuid4().hex[:8]}"
    client = Client(conn)
    handles = [client.start(workflow, LENGTH, queue=queue) for _ in range(workflows)]
    burst(TimedDurableWorker([queue], connection=conn, lease_ttl=30))
    if any(handle.status() != "completed" for handle in handles):
        raise RuntimeError("a metered workflow did not finish in one burst")
    return workflows * LENGTH


def _rq_hop(conn: Any, workflows: int, _: Any) -> int:
    """As many raw RQ chain hops as ``_queued`` runs activities."""
    hops = workflows * LENGTH
    name = f"bench-sc-rq-{uuid.uuid4().hex[:8]}"
    Queue(name, connection=conn).enqueue(flows.rq_hop, hops - 1, name, result_ttl=0, job_timeout=-1)
    worker = TimedSimpleWorker([name], connection=conn)
    burst(worker)
    if len(worker.marks) != hops:
        raise RuntimeError(f"raw RQ chain ran {len(worker.marks)} jobs, expected {hops}")
    return hops


def _pings(conn: Any, workflows: int, _: Any) -> int:
    """PING round trips, one client: the unit to compare another machine's Redis with (a step
    costs the server so many PINGs' worth of CPU)."""
    count = workflows * LENGTH * 10
    for _ in range(count):
        conn.ping()
    return count


def _median_of(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over repetitions (per command too; absent counts as 0)."""
    out: dict[str, Any] = {}
    for key, first in values[0].items():
        if isinstance(first, dict):
            names = set().union(*(v[key] for v in values))
            out[key] = {n: statistics.median(v[key].get(n, 0.0) for v in values) for n in sorted(names)}
        else:
            out[key] = statistics.median(v[key] for v in values)
    out["values"] = {"wall": [v["wall"] for v in values], "cpu_main": [v["cpu_main"] for v in values]}
    return out


# -- part 2: worker processes under load, and idle ----------------------------------------------


def _under_load(ctx: Context, counts: list[int]) -> dict[str, Any]:
    workflows, drive_workflows = ctx.size(8, 48), ctx.size(16, 96)
    idle_seconds = ctx.size(2.5, 5.0)  # >= 2.1 s: workers publish their counters every 2 s
    io: dict[int, dict[str, Any]] = {}
    idle: dict[int, dict[str, Any]] = {}
    hit_rate: dict[int, float] = {}
    drive: dict[str, Any] = {}
    with RedisServer("everysec") as server:
        conn = server.client()
        baseline = _idle(conn, idle_seconds)  # redis-server's own housekeeping, no worker yet
        for count in counts:
            queue = f"bench-sc-{uuid.uuid4().hex[:8]}"
            procs = [spawn([sys.executable, "-m", "durable", "worker", "--url", server.url, "--queue", queue,
                            "--import", "benchmarks.flows", "--log-level", "WARNING"],
                           ctx.scratch / f"scaling-{count}-{i}.log") for i in range(count)]
            try:
                _wait_for_workers(conn, queue, count, procs)
                _round(conn, queue, flows.io_sequence, count, 1)  # warm-up: every worker imports and connects
                rounds = []
                for rep in range(ctx.reps):
                    rounds.append(_loaded(conn, server, procs, queue, flows.io_sequence, workflows))
                    ctx.progress.advance(f"{count} workers, rep {rep + 1}: {rounds[-1]['rate']:.1f} act/s, "
                                         f"{rounds[-1]['cores_busy']:.2f} cores busy, redis main thread "
                                         f"{rounds[-1]['redis_main']:.0%}")
                io[count] = _median_of_rounds(rounds)
                idle[count] = _idle(conn, idle_seconds)
                hits, misses = _cache_counters(conn, procs)  # published during the idle window
                hit_rate[count] = hits / (hits + misses) if hits + misses else 0.0
                ctx.progress.advance(f"{count} workers idle: {idle[count]['commands_per_s']:.0f} commands/s, "
                                     f"redis main thread {idle[count]['cpu_main_per_s']:.1%}")
                if count == counts[-1]:
                    rounds = []
                    for rep in range(ctx.reps):
                        rounds.append(_loaded(conn, server, procs, queue, flows.sequence, drive_workflows))
                        ctx.progress.advance(f"max drive, {count} workers, rep {rep + 1}: "
                                             f"{rounds[-1]['rate']:.0f} act/s, redis main thread "
                                             f"{rounds[-1]['redis_main']:.0%}")
                    drive = _median_of_rounds(rounds)
            finally:
                _stop_together(procs)
        conn.close()
    base = io[counts[0]]["rate"]
    scaling = {c: io[c]["rate"] / (c * base) for c in counts}
    return {"io": io, "idle": idle, "baseline": baseline, "hit_rate": hit_rate, "drive": drive, "scaling": scaling,
            "workflows": workflows, "drive_workflows": drive_workflows, "idle_seconds": idle_seconds}


def _round(conn: Any, queue: str, workflow: Any, workflows: int, activities: int) -> float:
    from durable import Client

    client = Client(conn)
    start = time.perf_counter()
    handles = [client.start(workflow, activities, queue=queue) for _ in range(workflows)]
    for handle in handles:
        if handle.result(timeout=600) != activities:
            raise RuntimeError(f"workflow {handle.id} returned something else")
    return time.perf_counter() - start


def _loaded(conn: Any, server: RedisServer, procs: list[Any], queue: str, workflow: Any,
            workflows: int) -> dict[str, float]:
    """One round of ``workflows`` runs of LENGTH activities, and what every process spent on it."""
    workers = [proc.pid for proc in procs]
    redis_group = [server.proc.pid] if server.proc else []
    before, w0, r0, own0 = sample(conn), cpu_seconds(workers), cpu_seconds(redis_group), os.times()
    wall = _round(conn, queue, workflow, workflows, LENGTH)
    after, w1, r1, own1 = sample(conn), cpu_seconds(workers), cpu_seconds(redis_group), os.times()
    d = delta(before, after)
    steps = workflows * LENGTH
    client = (own1.user - own0.user) + (own1.system - own0.system)
    busy = (w1 - w0) + (r1 - r0) + client
    return {"rate": steps / wall, "wall": wall, "cores_busy": busy / wall, "worker_cores": (w1 - w0) / wall,
            "redis_cores": (r1 - r0) / wall, "client_cores": client / wall, "redis_main": d.cpu_main / d.seconds,
            "cpu_per_step": busy / steps, "redis_main_per_step": d.cpu_main / steps,
            "commands_per_step": d.commands / steps, "evalsha_per_step": d.calls.get("evalsha", 0) / steps}


def _median_of_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out["values"] = {"rate": [r["rate"] for r in rounds], "redis_main": [r["redis_main"] for r in rounds]}
    return out


def _idle(conn: Any, seconds: float) -> dict[str, Any]:
    """What idle workers cost Redis: commands and main-thread CPU per second over ``seconds``."""
    time.sleep(0.5)  # the last round's stragglers (result notices, releases) settle
    before = sample(conn)
    time.sleep(seconds)
    d = delta(before, sample(conn))
    return {"commands_per_s": d.commands / d.seconds, "cpu_main_per_s": d.cpu_main / d.seconds,
            "evalsha_per_s": d.calls.get("evalsha", 0) / d.seconds,
            "by_command_per_s": {n: c / d.seconds for n, c in sorted(d.calls.items())},
            "usec_by_command_per_s": {n: u / d.seconds for n, u in sorted(d.usec.items())}}


def _cache_counters(conn: Any, procs: list[Any]) -> tuple[int, int]:
    """(hits, misses) of these worker processes' generator caches, as they last published them."""
    from durable.store import Store

    pids = {str(proc.pid) for proc in procs}
    mine = [s for s in Store(conn).worker_stats() if s.get("pid") in pids]
    return sum(int(s["cache_hits"]) for s in mine), sum(int(s["cache_misses"]) for s in mine)


def _stop_together(procs: list[Any]) -> None:
    """SIGTERM every worker first, then reap each: idle workers leave in parallel."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop(proc)


# -- part 3: the ceiling --------------------------------------------------------------------------


def _ceiling(ops: dict[str, Any], load: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    """One primary's ceiling, estimated from the main-thread CPU per step and per idle worker."""
    per_step = ops["queued"]["cpu_main"]
    base = load["baseline"]["cpu_main_per_s"]
    a, b = _fit_background({c: max(load["idle"][c]["cpu_main_per_s"] - base, 0.0) for c in counts})
    # The part that surely grows with the square of the workers: every worker's keeper checks every
    # worker's liveness (EXISTS in the rehome script) 4 times a second. Its executed time alone is a
    # floor for the quadratic term, however noisy the fit of the idle CPU is.
    top = counts[-1]
    idle_top = load["idle"][top]
    exists_per_s = idle_top["by_command_per_s"].get("exists", 0.0)
    exists_cpu = idle_top["usec_by_command_per_s"].get("exists", 0.0) * 1e-6  # seconds per second
    b = max(b, exists_cpu / top ** 2)
    per_worker_rate = load["io"][counts[0]]["rate"]  # one worker, 20 ms I/O activities
    overhead = 1 / per_worker_rate - flows.IO_SECONDS  # what a step adds to the activity's own wait

    def workers_for(rate: float) -> float:
        """Workers W at which base + W * rate * per_step + a*W + b*W^2 = HEADROOM (one core's share)."""
        linear, budget = rate * per_step + a, HEADROOM - base
        return budget / linear if b <= 0 else (-linear + math.sqrt(linear ** 2 + 4 * b * budget)) / (2 * b)

    workers = workers_for(per_worker_rate)
    by_duration = {str(d): {"per_worker_rate": 1 / (d + overhead), "workers": workers_for(1 / (d + overhead)),
                            "steps": workers_for(1 / (d + overhead)) / (d + overhead)} for d in (0.02, 0.2, 1.0)}
    measured = {}
    for label, figures in (("io_top", load["io"][top]), ("drive", load["drive"])):
        if figures and figures["redis_main"] > 0:
            measured[label] = figures["rate"] * HEADROOM / figures["redis_main"]
    return {
        "redis_main_per_step": per_step,
        "steps_full_core": 1 / per_step,
        "steps_headroom": HEADROOM / per_step,
        "inline_steps_headroom": HEADROOM / ops["inline"]["cpu_main"],
        # With appendfsync always the main thread also waits in fsync, which its CPU time does not show:
        # an upper bound.
        "steps_headroom_always": HEADROOM / ops["queued_always"]["cpu_main"],
        "background_fit": {"server_alone": base, "per_worker": a, "per_worker_squared": b},
        "liveness_checks": {"workers": top, "exists_per_s": exists_per_s, "exists_cpu_per_s": exists_cpu,
                            "usec_per_exists": exists_cpu * 1e6 / exists_per_s if exists_per_s else None,
                            "idle_workers_share_of_a_core": {str(w): base + a * w + b * w * w
                                                             for w in (16, 100, 200, 500)}},
        "per_worker_rate": per_worker_rate,
        "workers": workers,
        "steps_at_workers": workers * per_worker_rate,
        "step_overhead": overhead,
        "by_activity_seconds": by_duration,
        "ping_equivalents_per_step": per_step / ops["ping"]["cpu_main"],
        "redis_main_per_ping": ops["ping"]["cpu_main"],
        "from_load": measured,
        "headroom": HEADROOM,
    }


def _fit_background(points: dict[int, float]) -> tuple[float, float]:
    """Least squares of cost(W) = a*W + b*W² through the origin; b = 0 if the fit wants it negative."""
    xs = list(points)
    s2 = sum(x ** 2 for x in xs)
    s3 = sum(x ** 3 for x in xs)
    s4 = sum(x ** 4 for x in xs)
    t1 = sum(x * points[x] for x in xs)
    t2 = sum(x ** 2 * points[x] for x in xs)
    det = s2 * s4 - s3 ** 2
    if len(xs) >= 2 and det > 0:
        a, b = (t1 * s4 - t2 * s3) / det, (s2 * t2 - s3 * t1) / det
        if b >= 0 and a >= 0:
            return a, b
    return max(t1 / s2, 0.0), 0.0


# -- rows -----------------------------------------------------------------------------------------


def _rows(ops: dict[str, Any], load: dict[str, Any], ceiling: dict[str, Any], counts: list[int]) -> list[Row]:
    io, idle, top, cpus = load["io"], load["idle"], counts[-1], _cpus()
    names = "/".join(map(str, counts))
    base = load["baseline"]

    def net(count: int) -> float:
        return (idle[count]["cpu_main_per_s"] - base["cpu_main_per_s"]) / count

    q, i, h = ops["queued"], ops["inline"], ops["rq_hop"]
    rq_peer = f"raw RQ {version('rq')} chain hop (SimpleWorker, same Redis, AOF appendfsync everysec)"
    rows = [Row(
        metric=f"scaling: throughput, {flows.IO_SECONDS * 1e3:g} ms I/O activities, {names} "
               f"worker processes ({cpus} CPUs)",
        durable=f"{_each([io[c]['rate'] for c in counts], '.0f')} activities/s",
        ratio=f"{load['scaling'][top]:.2f} of linear at {top} ({_each([load['scaling'][c] for c in counts], '.2f')})",
        target="(context: linear needs free cores)",
        values={str(c): io[c] for c in counts},
    ), Row(
        metric=f"… CPU busy during those rounds: all processes (of {cpus} cores) / redis-server's main thread",
        durable=f"{_each([io[c]['cores_busy'] for c in counts], '.2f')} cores / "
                f"{_each([io[c]['redis_main'] for c in counts], '.0%')} of one core",
        ratio=f"{io[top]['cpu_per_step'] * 1e3:.1f} ms CPU per activity at {top}: caps this box near "
              f"{cpus / io[top]['cpu_per_step']:.0f} activities/s",
        target="(context)",
    ), Row(
        metric=f"… generator cache hit rate, {names} worker processes",
        durable=_each([load["hit_rate"][c] for c in counts], ".1%"), target="(context: stays high with many workers)",
        values={str(c): load["hit_rate"][c] for c in counts},
    ), Row(
        metric=f"… idle workers' load on Redis (lease keeper, RQ scheduler, polling), {names} workers",
        durable=f"{_each([idle[c]['commands_per_s'] for c in counts], '.0f')} commands/s; main thread "
                f"{_each([idle[c]['cpu_main_per_s'] for c in counts], '.1%')} of a core (redis-server alone: "
                f"{base['commands_per_s']:.0f} commands/s, {base['cpu_main_per_s']:.1%})",
        ratio=f"per worker, net of the server alone: {net(top) * 1e3:.2f} ms CPU/s at {top} vs "
              f"{net(counts[0]) * 1e3:.2f} at {counts[0]}; EXISTS (every keeper round checks every worker's "
              f"liveness) {_each([idle[c]['by_command_per_s'].get('exists', 0.0) for c in counts], '.0f')}/s",
        target="(context)",
        values={"baseline": base, **{str(c): idle[c] for c in counts}},
    )]
    for label, figures in ((f"queued activity step (workflows of {LENGTH}, start included)", q),
                           (f"inline activity step (workflows of {LENGTH}, start included)", i)):
        rows.append(Row(
            metric=f"Redis per {label}, appendfsync everysec",
            durable=f"{figures['commands']:.1f} commands ({figures['sent']:.1f} sent, {figures['in_scripts']:.1f} "
                    f"inside {figures['evalsha']:.2f} EVALSHA) in {figures['round_trips']:.1f} round trips; "
                    f"main thread {fmt_seconds(figures['cpu_main'])} CPU (Σ commandstats "
                    f"{fmt_seconds(figures['usec_sum'])})",
            peer=rq_peer if figures is q else "",
            peer_figure=f"{h['commands']:.1f} commands in {h['round_trips']:.1f} round trips; "
                        f"{fmt_seconds(h['cpu_main'])} CPU" if figures is q else "",
            ratio=(f"{q['commands'] / h['commands']:.2f}× the commands, {q['round_trips'] / h['round_trips']:.2f}× "
                   f"the round trips and {q['cpu_main'] / h['cpu_main']:.2f}× the main-thread CPU of a raw RQ hop "
                   "(durable runs its jobs without RQ's per-job bookkeeping)") if figures is q else "",
            target="(context)",
            values={"by_command": figures["by_command"], "in_scripts_by_command": figures["in_scripts_by_command"]},
        ))
    qa, ia = ops["queued_always"], ops["inline_always"]
    rows.append(Row(
        metric="… wall time per step, 1 in-process worker: appendfsync always vs everysec (queued / inline)",
        durable=f"{fmt_seconds(qa['wall'])} vs {fmt_seconds(q['wall'])} / {fmt_seconds(ia['wall'])} vs "
                f"{fmt_seconds(i['wall'])}",
        ratio=f"{qa['wall'] / q['wall']:.2f}× / {ia['wall'] / i['wall']:.2f}×; Redis main-thread CPU per queued step "
              f"{fmt_seconds(qa['cpu_main'])} vs {fmt_seconds(q['cpu_main'])} (with always it fsyncs the AOF itself "
              "before answering)",
        target="(context)",
    ))
    drive = load["drive"]
    rows.append(Row(
        metric=f"max drive: {top} workers, no-op queued activities ({load['drive_workflows']} workflows of {LENGTH})",
        durable=f"{drive['rate']:.0f} activities/s; all processes {drive['cores_busy']:.2f} of {cpus} cores, "
                f"redis-server's main thread {drive['redis_main']:.0%} of one core",
        ratio=f"{fmt_seconds(drive['redis_main_per_step'])} Redis CPU and {drive['commands_per_step']:.0f} "
              f"commands per activity at that load; the workers use {drive['worker_cores']:.2f} cores"
              + ("; the CPUs saturate before Redis does" if drive["cores_busy"] >= 0.85 * cpus
                 and drive["redis_main"] < 0.5 else ""),
        target="(context)",
        values=drive,
    ))
    from_load = ceiling["from_load"].get("drive")
    by = ceiling["by_activity_seconds"]
    rows.append(Row(
        metric=f"ESTIMATE: one Redis primary at {HEADROOM:.0%} of one core (queued activity steps; the inline "
               "figure in brackets)",
        durable=f"≈ {ceiling['steps_headroom']:,.0f} steps/s (≈ {ceiling['steps_full_core']:,.0f} at 100 %) "
                f"[inline ≈ {ceiling['inline_steps_headroom']:,.0f}]; appendfsync always: at most "
                f"≈ {ceiling['steps_headroom_always']:,.0f}",
        peer_figure=f"from max-drive utilisation: ≈ {from_load:,.0f} steps/s" if from_load else "",
        ratio=f"reached by ≈ {ceiling['workers']:.0f} worker processes of {flows.IO_SECONDS * 1e3:g} ms I/O "
              f"activities ({ceiling['per_worker_rate']:.0f}/s each), ≈ {by['0.2']['workers']:.0f} of 200 ms, "
              f"≈ {by['1.0']['workers']:.0f} of 1 s (idle load included)",
        target="(estimate from the measured CPU per step)",
        values=ceiling,
    ))
    ping = ops["ping"]["cpu_main"]
    rows.append(Row(
        metric="… to transpose to other hardware: redis-server main-thread CPU per PING round trip here",
        durable=f"{fmt_seconds(ping)}; a queued step costs ≈ {q['cpu_main'] / ping:.0f} PINGs' worth, an inline "
                f"step ≈ {i['cpu_main'] / ping:.0f}",
        target="(context)",
    ))
    return rows


def _each(values: list[float], spec: str) -> str:
    return " / ".join(format(value, spec) for value in values)


def _keys_to_str(value: Any) -> Any:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _cpus() -> int:
    return os.cpu_count() or 1
