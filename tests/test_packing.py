"""Packed history blocks: the copy of full blocks of history that makes cold loads fast.

The history list stays the record; a packed block must always decode to
exactly the events of the entries it copies, and anything doubtful about a
block (another run, another format, a wrong position) makes the load ignore it
and read the list instead.
"""

from __future__ import annotations

import cloudpickle
import pytest

from durable import clock
from durable.errors import SerializationError, SignatureError
from durable.events import ActivityCompleted, ActivityScheduled, TimerStarted, to_dict
from durable.inspection import inspect_workflow
from durable.packed import History, PairRun
from durable.records import Dispatch, NewRun
from durable.replay import Replayer
from durable.serialization import SECRET_ENV, _sign, pack_events
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


# -- format 2: compact runs (durable/packed.py) ---------------------------------------------------


def test_a_block_of_the_old_format_is_ignored_and_rebuilt(client):
    handle = client.start(workflows.tallied, PACK_SIZE, queue="nobody-serves-this")
    store = Store(client.conn)
    events = synthesized(PACK_SIZE // 2 + 3)
    assert store.commit(handle.id, 0, events)
    run_id = store.meta(handle.id).run_id
    old = _sign(cloudpickle.dumps((1, run_id, 0, events[:PACK_SIZE])))
    client.conn.rpush(store.packed_key(handle.id), old)
    _, loaded = store.load(handle.id, pack=True)
    assert isinstance(loaded, list) and [to_dict(e) for e in loaded] == [to_dict(e) for e in events]
    assert not client.conn.exists(store.packed_key(handle.id))
    store.load(handle.id, pack=True)  # a worker's next cold load packs it again, in this format
    _, again = store.load(handle.id)
    assert isinstance(again, History) and any(isinstance(p, PairRun) for p in again.parts)
    assert again == events


def test_a_cold_load_replays_compact_runs_from_the_store(client):
    handle = client.start(workflows.tallied, PACK_SIZE * 2, queue="nobody-serves-this")
    store = Store(client.conn)
    assert store.commit(handle.id, 0, tallied_history(PACK_SIZE * 2 - 1))
    store.load(handle.id, pack=True)
    meta, history = store.load(handle.id)
    assert isinstance(history, History)
    replayer = Replayer(workflows.tallied.func, (PACK_SIZE * 2,), workflow_id=handle.id, run_id=meta.run_id)
    replayer.feed(history)
    assert replayer.step().new[0][0] == PACK_SIZE * 2 - 1
    assert all(part._events is None for part in history.parts if isinstance(part, PairRun))


def test_signed_blocks_and_entries_load_the_same(client, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    n = PACK_SIZE + 5
    handle = client.start(workflows.tallied, n, queue="nobody-serves-this")
    store = Store(client.conn)
    events = tallied_history(n, sleeping=True)
    assert store.commit(handle.id, 0, events)
    store.load(handle.id, pack=True)
    _, history = store.load(handle.id)
    assert isinstance(history, History) and sum(isinstance(p, PairRun) for p in history.parts) >= 2
    assert [to_dict(e) for e in history] == [to_dict(e) for e in events]


def test_an_unreadable_entry_after_the_blocks_raises_as_before(client):
    handle = client.start(workflows.tallied, PACK_SIZE, queue="nobody-serves-this")
    store = Store(client.conn)
    assert store.commit(handle.id, 0, tallied_history(PACK_SIZE // 2 + 2))
    store.load(handle.id, pack=True)
    client.conn.rpush(store.history_key(handle.id), b"not a pickle")
    with pytest.raises(SerializationError, match="cannot deserialize a history event"):
        store.load(handle.id)


def tallied_history(n, *, sleeping=False):
    events, total = [], 0
    for i in range(n):
        events += [ActivityScheduled(seq=i, time=50.0, activity=workflows.add.path, args=(total, i)),
                   ActivityCompleted(seq=i, time=51.0, result=total + i)]
        total += i
    if sleeping:
        events.append(TimerStarted(seq=n, time=60.0, fire_at=60.0 + 3600))
    return events


def test_inspecting_a_run_loaded_from_compact_blocks(client, monkeypatch):
    n = PACK_SIZE + 7
    handle = client.start(workflows.tallied, n, queue="nobody-serves-this")
    store = Store(client.conn)
    assert store.commit(handle.id, 0, tallied_history(n, sleeping=True))
    store.load(handle.id, pack=True)
    assert client.conn.llen(store.packed_key(handle.id)) == (2 * n + 1) // PACK_SIZE
    _, history = store.load(handle.id)
    assert isinstance(history, History) and any(isinstance(p, PairRun) for p in history.parts)
    monkeypatch.setattr(clock, "_source", lambda: 1000.0)
    compact = inspect_workflow(store, handle.id).as_dict()
    load = Store.load
    monkeypatch.setattr(Store, "load", lambda self, *a, **k: (lambda meta, h: (meta, list(h)))(*load(self, *a, **k)))
    plain = inspect_workflow(store, handle.id).as_dict()  # the same history as a list of events
    assert compact == plain
    assert compact["replay"] == "wait" and compact["waiting_on"].startswith("sleep")
    assert compact["frames"][0]["locals"]["total"] == repr(sum(range(n)))


def test_a_packed_run_whose_arguments_cannot_be_read_holds_the_workflow(client, tmp_path, monkeypatch):
    """A block's arguments are unpickled only when its events are needed (a mismatch here);
    a class missing from the worker then holds the workflow, as at load, instead of failing the job."""
    import sys

    from durable.step import Step

    (tmp_path / "ghostmod.py").write_text("class Ghost:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ghostmod  # type: ignore[import-not-found]

    handle = client.start(workflows.long_chain, PACK_SIZE + 2, 0.0, queue="nobody-serves-this")
    store = Store(client.conn)
    events = synthesized(PACK_SIZE)
    # what other code recorded at seq 3: another activity, called with a Ghost
    events[6] = ActivityScheduled(seq=3, activity="tests.workflows:other", args=(ghostmod.Ghost(),))
    assert store.commit(handle.id, 0, events)
    store.load(handle.id, pack=True)  # as a worker's cold load: the block is written
    assert client.conn.llen(store.packed_key(handle.id)) == 2
    monkeypatch.delitem(sys.modules, "ghostmod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])

    run_id = store.meta(handle.id).run_id
    Step(store, handle.id, run_id).run()  # replays from the block; seq 3 mismatches; reading it fails
    meta = store.meta(handle.id)
    assert meta.status == "running" and "cannot read its history" in (meta.stuck or "")
    assert "ghostmod" in meta.stuck
