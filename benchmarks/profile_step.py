"""Where a step's time goes: ``python -m benchmarks.profile_step [--steps N] [--length K] [--history L]``.

Runs workflows of K queued activities (then K inline ones) on top of L
recorded activities, N steps in all, in an in-process ``durable.Worker``:
once unprofiled (the real cost per step), once under cProfile. Prints the cost
per step split by entry point (RQ's job handling, durable's lease, load,
replay, commit, the activity), the Redis commands and round trips per step
(``INFO commandstats`` on the server, ``sendall`` calls in the client), and
the functions with the most own time. cProfile slows Python code more than it
slows waiting on sockets, so read the shares, not the profiled totals.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import uuid
from collections.abc import Sequence
from typing import Any

from . import flows
from .common import RedisServer, TimedDurableWorker, burst, fmt_seconds, steady_interval

# name -> (file suffix, function names): cumulative time per step of each entry point.
ENTRY_POINTS = {
    "execute_job": ("benchmarks/common.py", ("execute_job",)),  # the outermost wrapper: _Timed
    "lease": ("durable/upkeep.py", ("take_job", "end_job", "hold_leases", "release_lease")),
    "job": ("durable/runtime.py", ("advance", "run_activity", "fire_timer")),
    "rq_job": ("benchmarks/flows.py", ("rq_hop",)),
    "load": ("durable/reads.py", ("load_run",)),
    "resolve": ("durable/runtime.py", ("_replayer",)),
    "replay": ("durable/replay.py", ("feed", "step")),
    "activity": ("durable/activities.py", ("run_attempt",)),
    "commit": ("durable/store.py", ("commit",)),
    "dequeue": ("rq/worker/base.py", ("dequeue_job_and_maintain_ttl",)),
    "maintenance": ("rq/worker/base.py", ("check_for_suspension", "run_maintenance_tasks")),
}
LINES = [  # label, how to compute it from the entry points' seconds
    ("durable lease: take (with the intermediate list) + end if no commit did", lambda t: t["lease"]),
    ("the job function (durable Step.run / raw RQ hop)", lambda t: t["job"] + t["rq_job"]),
    ("  Store.load_run (meta + history or its tail in 1 round trip; none on a cache hit)", lambda t: t["load"]),
    ("  resolve the workflow, unpickle its input", lambda t: t["resolve"]),
    ("  replay engine (Replayer.feed + step)", lambda t: t["replay"]),
    ("  run the activity attempt", lambda t: t["activity"]),
    ("  Store.commit (the compare-and-append script on its own connection)", lambda t: t["commit"]),
    ("RQ's own job handling (status, execution records, results)",
     lambda t: t["execute_job"] - t["lease"] - t["job"] - t["rq_job"]),
    ("RQ dequeue between jobs", lambda t: t["dequeue"]),
    ("RQ maintenance, suspension checks", lambda t: t["maintenance"]),
]


def _start(conn: Any, workflow: Any, steps: int, history: int, length: int) -> tuple[str, int]:
    from durable import Client
    from durable.store import Store

    queue = f"bench-prof-{uuid.uuid4().hex[:8]}"
    client, store = Client(conn), Store(conn)
    count = max(steps // length, 1)
    for _ in range(count):
        handle = client.start(workflow, history + length, queue=queue)
        if history and not store.commit(handle.id, 0, flows.sequence_history(history)):
            raise RuntimeError("could not store the synthesized history")
    return queue, count * length


def unprofiled(conn: Any, workflow: Any, steps: int, history: int, length: int) -> float:
    queue, steps = _start(conn, workflow, steps, history, length)
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=60)
    burst(worker)
    return (worker.marks[-1][2] - worker.marks[0][1]) / steps if len(worker.marks) < 3 else \
        steady_interval(worker.marks) * len(worker.marks) / steps


def profiled(conn: Any, workflow: Any, steps: int, history: int, length: int
             ) -> tuple[pstats.Stats, int, dict[str, int]]:
    queue, steps = _start(conn, workflow, steps, history, length)
    worker = TimedDurableWorker([queue], connection=conn, lease_ttl=60)
    stats, commands = _profiled_burst(conn, worker)
    return stats, steps, commands


def _profiled_burst(conn: Any, worker: Any) -> tuple[pstats.Stats, dict[str, int]]:
    """Run ``worker`` in burst mode under cProfile; its profile and the Redis commands it sent."""
    before = _commandstats(conn)
    profiler = cProfile.Profile()
    profiler.enable()
    burst(worker)
    profiler.disable()
    after = _commandstats(conn)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    delta["info"] = delta.get("info", 0) - 1  # our own INFO call
    return pstats.Stats(profiler), {k: v for k, v in delta.items() if v > 0}


def _commandstats(conn: Any) -> dict[str, int]:
    stats = conn.info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}


def summarize(title: str, real: float, stats: pstats.Stats, steps: int, commands: dict[str, int], top: int) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = {}
    for key, (suffix, names) in ENTRY_POINTS.items():
        seconds[key] = sum(v[3] for (filename, _, fn), v in raw.items() if filename.endswith(suffix) and fn in names)
    whole = seconds["execute_job"] + seconds["dequeue"] + seconds["maintenance"]
    print(f"\n== {title}: {fmt_seconds(real)} per step unprofiled ({steps} steps) ==")
    print(f"  under cProfile {fmt_seconds(whole / steps)} per step; each part's share, and that share of the real "
          "cost:")
    for label, compute in LINES:
        share = compute(seconds) / whole if whole else 0.0
        if share > 0.0005:
            print(f"  {share:6.1%}  ~{fmt_seconds(share * real):>10}  {label}")
    sends = sum(v[1] for (_, _, fn), v in raw.items() if fn == "<method 'sendall' of '_socket.socket' objects>")
    total_commands = sum(commands.values())
    print(f"  Redis: {total_commands / steps:.1f} commands in ~{sends / steps:.1f} round trips (sendall) per step:")
    print("    " + ", ".join(f"{name} {count / steps:.1f}" for name, count in
                             sorted(commands.items(), key=lambda item: -item[1]) if count / steps >= 0.05))
    if top:
        print(f"  top {top} functions by own time:")
        stats.sort_stats("tottime").print_stats(top)


def rq_chain(conn: Any, steps: int) -> tuple[float, pstats.Stats, dict[str, int]]:
    """The raw RQ chain hop, unprofiled and profiled, for comparison."""
    from rq import Queue

    from .common import TimedSimpleWorker

    def go() -> TimedSimpleWorker:
        name = f"bench-prof-rq-{uuid.uuid4().hex[:8]}"
        Queue(name, connection=conn).enqueue(flows.rq_hop, steps, name, result_ttl=0, job_timeout=-1)
        worker = TimedSimpleWorker([name], connection=conn)
        return worker

    worker = go()
    burst(worker)
    real = steady_interval(worker.marks)
    stats, commands = _profiled_burst(conn, go())
    return real, stats, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--length", type=int, default=10,
                        help="activities per workflow (default 10: steps at short history, many workflows)")
    parser.add_argument("--history", type=int, default=0, help="activities already in each workflow's history")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    kinds = [("queued step", flows.sequence)]
    if not args.history:
        kinds.append(("inline step", flows.inline_sequence))
    with RedisServer("everysec") as server:
        conn = server.client()
        for _, workflow in kinds:
            unprofiled(conn, workflow, 5, 0, 5)  # warm-up
        for title, workflow in kinds:
            real = unprofiled(conn, workflow, args.steps, args.history, args.length)
            stats, steps, commands = profiled(conn, workflow, args.steps, args.history, args.length)
            summarize(f"{title} (workflows of {args.length} activities on top of {args.history} recorded)",
                      real, stats, steps, commands, args.top)
        real, stats, commands = rq_chain(conn, args.steps)
        summarize("raw RQ chain hop (for comparison)", real, stats, args.steps + 1, commands, 0)
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
