"""Fixtures: a fakeredis-backed client for unit tests, a real redis-server for integration."""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest

import durable
from durable.store import TERMINAL
from tests import workflows


@pytest.fixture
def fake_conn() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    yield fakeredis.FakeRedis(server=server)


@pytest.fixture
def client(fake_conn: fakeredis.FakeRedis) -> durable.Client:
    workflows.CALLS.clear()
    return durable.Client(fake_conn)


def drain(client: durable.Client, handle: durable.WorkflowHandle, timeout: float = 15.0, queues=("durable",)) -> str:
    """Run burst workers in this process until the workflow ends, moving due timers
    and retries onto their queues between rounds (as every durable worker does)."""
    deadline = time.monotonic() + timeout
    conn = client.conn
    while time.monotonic() < deadline:
        worker = durable.Worker(list(queues), connection=conn, lease_ttl=5)
        worker.work(burst=True)
        status = handle.status()
        if status in TERMINAL:
            return status
        worker.store.promote_due(queues)
        time.sleep(0.02)
    raise AssertionError(f"workflow {handle.id} still {handle.status()} after {timeout} s")
