"""Writes lost the way a failover loses them, under a worker's generator cache.

A failover to a replica that lagged (or a restart that lost the last second of
an ``appendfsync everysec`` AOF) leaves Redis holding an earlier, consistent
state. Found while testing Sentinel failovers: the worker that advanced the
workflow still holds its generator, suspended at a history length Redis no
longer has. When another worker has meanwhile grown the history back to that
length, a cached generator used to continue from events it never saw, with
values (here ``durable.random()``) that history no longer records, and the
workflow completed with a result its own history does not replay to. Now every
incremental load and every commit checks that the history still ends with the
entry the worker replayed, so the stale generator is dropped and the run
replayed from Redis; the test runs with and without a cache.
"""

from __future__ import annotations

import pytest

import durable
from tests.integration import failover_flows

from .servers import Servers

pytestmark = pytest.mark.integration


class StaleCache(AssertionError):
    """The failure a stale generator causes (kept apart from other assertion errors)."""


@pytest.mark.parametrize("cache_size", [pytest.param(1000, id="cache"), pytest.param(0, id="no-cache")])
def test_a_cached_generator_does_not_outlive_lost_writes(servers: Servers, cache_size: int) -> None:
    lines = ['save ""', "appendonly no", "dbfilename snapshot.rdb"]
    server = servers.start("redis", lines)
    client = durable.Client(f"redis://127.0.0.1:{server.port}/0")
    handle = client.start(failover_flows.drift, 6, workflow_id="drift")
    cached = durable.Worker(["durable"], name="A", connection=client.conn, lease_ttl=5, cache_size=cache_size)

    cached.work(burst=True, max_jobs=2)
    client.conn.save()  # what the replica had when the primary went away
    cached.work(burst=True, max_jobs=2)  # recorded durable.random(), kept the generator (if it keeps any)
    assert len(cached.cache) == (1 if cache_size else 0)

    server.kill()
    servers.start("redis", lines, port=server.port)  # the "new primary": the snapshot, the rest lost
    client.conn.connection_pool.disconnect()
    other = durable.Worker([f"durable-w-{cached.name}", "durable"], name="B", connection=client.conn,
                           lease_ttl=5, cache_size=0)  # (with no cache, A has no own queue: B serves it anyway)
    other.work(burst=True, max_jobs=3)  # re-records a fresh durable.random()
    for _ in range(20):
        cached.work(burst=True)
        other.work(burst=True)
        cached.store.promote_due(["durable"])
        if handle.status() != "running":
            break

    x, total = handle.result(timeout=5)
    recorded = [e["value"] for e in handle.history() if e["type"] == "value_recorded"]
    assert total == sum(range(6))
    if recorded != [x]:
        raise StaleCache(f"the workflow returned random() = {x}, its history records {recorded}")
