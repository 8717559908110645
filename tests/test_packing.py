"""Packed history blocks: the copy of full blocks of history that makes cold loads fast.

The history list stays the record; a packed block must always decode to
exactly the events of the entries it copies, and anything doubtful about a
block (another run, another format, a wrong position) makes the load ignore it
and read the list instead.
"""

from __future__ import annotations

import pytest

from durable.errors import SignatureError
from durable.events import ActivityCompleted, ActivityScheduled, to_dict
from durable.records import Dispatch, NewRun
from durable.serialization import SECRET_ENV, pack_events
from durable.store import PACK_SIZE, Store

from . import workflows
from .conftest import drain


def synthesized(count: int) -> list:
    events = []
    for i in range(count):
        events += [ActivityScheduled(seq=i, activity=workflows.add.path, args=(i, 1), options={"timeout": 5}),
                   ActivityCompleted(seq=i, result=i + 1)]
    return events


def stored(client, activities: int) -> tuple[str, Store]:
    handle = client.start(workflows.long_chain, activities + 1, 0.0, queue="nobody-serves-this")
    store = Store(client.conn)
    assert store.commit(handle.id, 0, synthesized(activities))
    return handle.id, store


def as_dicts(events):
    return [to_dict(event) for event in events]


def test_a_cold_load_packs_full_blocks_and_the_next_one_reads_them(client):
    workflow_id, store = stored(client, PACK_SIZE + 10)  # 2 full blocks and 20 entries
    _, plain = store.load(workflow_id)
    assert client.conn.llen(store.packed_key(workflow_id)) == 0  # only workers pack
    _, first = store.load(workflow_id, pack=True)
    assert client.conn.llen(store.packed_key(workflow_id)) == 2
    _, second = store.load(workflow_id, pack=True)
    assert as_dicts(first) == as_dicts(second) == as_dicts(plain) == as_dicts(store.history(workflow_id))
    assert client.conn.llen(store.packed_key(workflow_id)) == 2  # nothing packed twice


def test_a_block_of_another_run_or_position_is_ignored_and_dropped(client):
    workflow_id, store = stored(client, PACK_SIZE)
    events = store.history(workflow_id)
    client.conn.rpush(store.packed_key(workflow_id), pack_events("another-run", 0, events[:PACK_SIZE]))
    _, loaded = store.load(workflow_id)
    assert as_dicts(loaded) == as_dicts(events)
    assert not client.conn.exists(store.packed_key(workflow_id))
    meta = store.meta(workflow_id)
    client.conn.rpush(store.packed_key(workflow_id), pack_events(meta.run_id, PACK_SIZE, events[:PACK_SIZE]))
    assert as_dicts(store.load(workflow_id)[1]) == as_dicts(events)


def test_a_tampered_block_is_refused_when_signing_is_on(client, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    workflow_id, store = stored(client, PACK_SIZE)
    store.load(workflow_id, pack=True)
    block = client.conn.lindex(store.packed_key(workflow_id), 0)
    client.conn.lset(store.packed_key(workflow_id), 0, block[:-3] + bytes([block[-3] ^ 1]) + block[-2:])
    with pytest.raises(SignatureError):
        store.load(workflow_id)


def test_a_new_run_drops_the_blocks_of_the_old_one(client):
    workflow_id, store = stored(client, PACK_SIZE)
    store.load(workflow_id, pack=True)
    assert client.conn.llen(store.packed_key(workflow_id)) == 2  # two events per activity
    old_run = store.meta(workflow_id).run_id
    first = Dispatch("durable.runtime.advance", (workflow_id, "run-2"), "nobody-serves-this")
    run = NewRun(run_id="run-2", fields={"previous_run": old_run}, first=first)
    assert store.commit(workflow_id, 2 * PACK_SIZE, new_run=run)
    assert not client.conn.exists(store.packed_key(workflow_id))
    assert store.load(workflow_id, pack=True)[1] == []
    assert len(store.history(workflow_id)) == 0 and client.conn.llen(store.archive_key(workflow_id, old_run)) > 0


def test_a_long_workflow_run_without_a_cache_replays_from_blocks(client, monkeypatch):
    monkeypatch.setenv("DURABLE_CACHE_SIZE", "0")  # every step a cold load
    n = PACK_SIZE // 2 + 5  # two events per activity: the history passes one full block
    handle = client.start(workflows.long_chain, n, 0.0)
    assert drain(client, handle, timeout=120) == "completed"
    assert handle.result() == sum(range(n))
    store = Store(client.conn)
    assert client.conn.llen(store.packed_key(handle.id)) == 1
    _, events = store.load(handle.id)
    assert as_dicts(events) == as_dicts(store.history(handle.id))
