"""Cold replay: rebuilding a workflow from a history of N completed activities.

Engine only: ``Replayer(...).feed(events); .step()`` on synthesized events
(``ActivityScheduled`` + ``ActivityCompleted`` per activity) for a workflow of
N + 1 activities, so the step ends by scheduling the next one. With the load:
the history is stored with ``Store.commit`` on a real redis-server, and the
timed part is what a step does before it decides: ``Store.load`` (meta and
history in one round trip, unpickling the packed blocks of ``PACK_SIZE`` events and
each entry after them), resolving the workflow,
unpickling its input, and the replay. Peers: durabletask-python's executor and
Azure Durable Functions' orchestrator on equivalent synthesized histories.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import flows
from ..common import Context, RedisServer, Row, Skip, Stats, fmt_seconds, have, per_call
from ..peers import azure_peer, durabletask_peer

NAME = "cold_replay"
TITLE = "Cold replay per recorded activity"
TARGET_ENGINE = 2e-6
TARGET_LOAD_1000 = 3e-3


def engine_replayer(n: int) -> Callable[[], Any]:
    from durable.replay import Replayer

    events = flows.sequence_history(n)

    def replay() -> Any:
        replayer = Replayer(flows.sequence.func, (n + 1,), {}, workflow_id="bench", run_id="r")
        replayer.feed(events)
        decision = replayer.step()
        assert decision.kind == "schedule" and decision.new[0][0] == n, decision
        return decision

    replay()
    return replay


def loading_replayer(conn: Any, n: int) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]:
    """(load + replay, load only, load of the list alone) for a stored workflow with ``n``
    completed activities, loaded as a worker does: full blocks from their packed copies."""
    from durable import Client
    from durable.registry import resolve
    from durable.replay import Replayer
    from durable.serialization import loads
    from durable.store import Store

    queue = f"bench-idle-{uuid.uuid4().hex[:8]}"  # its first advance job is never run
    handle = Client(conn).start(flows.sequence, n + 1, queue=queue)
    store = Store(conn)
    if not store.commit(handle.id, 0, flows.sequence_history(n)):
        raise RuntimeError("could not store the synthesized history")

    def load() -> Any:
        return store.load(handle.id, pack=True)

    def load_unpacked() -> Any:  # what the first cold load after the history grew costs
        conn.delete(store.packed_key(handle.id))
        return store.load(handle.id)

    def load_and_replay() -> Any:
        meta, history = store.load(handle.id, pack=True)
        assert meta is not None
        target = resolve(meta.path)
        args, kwargs = loads(meta.input, "the arguments")
        replayer = Replayer(getattr(target, "func", target), args, kwargs, workflow_id=handle.id,
                            run_id=meta.run_id, name=meta.name)
        replayer.feed(history)
        decision = replayer.step()
        assert decision.kind == "schedule" and decision.new[0][0] == n, decision
        return decision

    load_and_replay()  # packs the full blocks, as a worker's first cold load does
    return load_and_replay, load, load_unpacked


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.size([10, 100], [10, 100, 1000, 10_000])
    load_size = ctx.size(100, 1000)
    engines: dict[str, tuple[str, Callable[[int], Callable[[], Any]]]] = {
        "durable": ("durable engine (Replayer.feed + step, events in memory)", engine_replayer),
        "durabletask": (durabletask_peer.label(), durabletask_peer.replayer),
        "azure": (azure_peer.label(), azure_peer.replayer),
    }
    ctx.progress.begin(NAME, ctx.reps * (len(sizes) + 1))
    skipped: list[str] = []
    fns: dict[str, dict[int, Callable[[], Any]]] = {}
    for key, (_, factory) in engines.items():
        try:
            fns[key] = {n: factory(n) for n in sizes}
        except Skip as exc:
            skipped.append(f"{key}: {exc}")
            ctx.progress.note(f"skipping {key}: {exc}")
    stats = {key: {n: Stats() for n in sizes} for key in fns}
    budget = ctx.size(0.02, 0.1)  # seconds of looping per repetition
    for rep in range(ctx.reps):
        for n in sizes:
            for key in fns:
                stats[key][n].add(per_call(fns[key][n], min_seconds=budget) / n)
            ctx.progress.advance(f"rep {rep + 1}, n={n}: durable {fmt_seconds(stats['durable'][n].values[-1])}/act")

    with RedisServer("everysec") as server:
        conn = server.client()
        full, load_only, unpacked = loading_replayer(conn, load_size)
        loaded, loading, list_only = Stats(), Stats(), Stats()
        for rep in range(ctx.reps):
            loaded.add(per_call(full, min_seconds=budget))
            loading.add(per_call(load_only, min_seconds=budget))
            list_only.add(per_call(unpacked, min_seconds=budget))
            ctx.progress.advance(f"rep {rep + 1}: load+replay of {load_size}: {fmt_seconds(loaded.values[-1])}")
        conn.close()

    largest = 1000 if 1000 in sizes else max(sizes)  # the size the issue states its targets at
    ours = stats["durable"][largest].median
    rows = [Row(metric=f"cold replay in the engine, per activity (history of {largest})",
                durable=fmt_seconds(ours), target=f"≤ {fmt_seconds(TARGET_ENGINE)} per activity",
                met=ours <= TARGET_ENGINE, values={"durable": stats["durable"][largest].to_dict()})]
    for key in ("durabletask", "azure"):
        if key in stats:
            theirs = stats[key][largest].median
            rows.append(Row(metric=f"cold replay per activity vs {key} (history of {largest})",
                            durable=fmt_seconds(ours), peer=engines[key][0], peer_figure=fmt_seconds(theirs),
                            ratio=f"{theirs / ours:.1f}× faster ({key} ÷ durable)", target="(context)",
                            values={key: stats[key][largest].to_dict()}))
    parser = "hiredis" if have("hiredis") else "redis-py's pure-Python parser"
    at_target_size = load_size == 1000
    rows.append(Row(
        metric=f"cold replay of {load_size} activities incl. load from Redis ({parser})",
        durable=fmt_seconds(loaded.median),
        target=f"≤ {fmt_seconds(TARGET_LOAD_1000)} for 1000" if at_target_size else "(1000 in a full run)",
        met=(loaded.median <= TARGET_LOAD_1000) if at_target_size else None,
        values={"load_and_replay": loaded.to_dict()},
    ))
    rows.append(Row(metric=f"… of which Store.load of {load_size} activities (packed blocks + the rest)",
                    durable=fmt_seconds(loading.median), target="(context)",
                    values={"load_only": loading.to_dict()}))
    rows.append(Row(metric=f"… Store.load of the same {load_size} from the list alone (no packed blocks yet)",
                    durable=fmt_seconds(list_only.median), target="(context)",
                    ratio=f"{list_only.median / loading.median:.1f}× the packed load",
                    values={"list_only": list_only.to_dict()}))
    series = {key: {str(n): stats[key][n].median for n in sizes} for key in stats}
    return {"rows": [r.to_dict() for r in rows], "skipped": skipped, "series": {"replay_per_activity": series},
            "settings": {"sizes": sizes, "load_size": load_size, "parser": parser, "clock": time.get_clock_info(
                "perf_counter").implementation}}
