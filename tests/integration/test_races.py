"""No double commit under races, on a real redis-server (fakeredis does not run Lua
scripts atomically across threads, so this cannot be shown there)."""

from __future__ import annotations

import threading

import pytest
import redis

import durable
from durable.runtime import Step
from durable.store import Dispatch
from tests import workflows

pytestmark = pytest.mark.integration


def _comparable(history):
    keep = ("type", "seq", "activity", "args", "result", "attempt")
    return [{k: e[k] for k in keep if k in e} for e in history]


def _single_runner(client: durable.Client, workflow_id: str) -> list[dict]:
    handle = client.start(workflows.inline_chain, 6, workflow_id=workflow_id)
    run_id = client.store.meta(workflow_id).run_id
    for _ in range(5):
        Step(client.store, workflow_id, run_id).run()
        Step(client.store, workflow_id, run_id, activity=(6, 2)).run()
    assert handle.status() == "completed"
    return _comparable(handle.history())


def _race(client: durable.Client, workflow_id: str, threads: int = 16) -> dict[str, int]:
    """``threads`` threads step one workflow at once, over and over; returns commits won/lost."""
    run_id = client.store.meta(workflow_id).run_id
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    commits = {"won": 0, "lost": 0}
    real_commit = client.store.commit

    def counted(*args, **kwargs):
        won = real_commit(*args, **kwargs)
        commits["won" if won else "lost"] += 1
        return won

    def racer():
        try:
            barrier.wait()
            for _ in range(10):
                Step(client.store, workflow_id, run_id).run()
                Step(client.store, workflow_id, run_id, activity=(6, 2)).run()  # the retry job, duplicated
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    client.store.commit = counted  # type: ignore[method-assign]
    try:
        pool = [threading.Thread(target=racer) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        client.store.commit = real_commit  # type: ignore[method-assign]
    assert not errors
    return commits


def test_sixteen_threads_stepping_one_workflow_write_one_history(redis_url):
    client = durable.Client(redis.Redis.from_url(redis_url))
    expected = _single_runner(client, "single")
    for trial in range(3):
        handle = client.start(workflows.inline_chain, 6, workflow_id=f"raced-{trial}")
        commits = _race(client, handle.id)
        assert handle.status() == "completed"
        assert _comparable(handle.history()) == expected
        print(f"trial {trial}: commits won {commits['won']}, lost {commits['lost']}")
        assert commits["lost"] > 0  # the race really happened


def test_duplicate_jobs_on_four_worker_processes_write_one_history(redis_url, workers):
    client = durable.Client(redis.Redis.from_url(redis_url))
    expected_single = client.start(workflows.arithmetic, 7, workflow_id="dup-single")
    workers.start_many(4)
    assert expected_single.result(timeout=30) == 116
    expected = _comparable(expected_single.history())
    handle = client.start(workflows.arithmetic, 7, workflow_id="dup-flood")
    run_id = client.store.meta("dup-flood").run_id
    flood = [Dispatch("durable.runtime.advance", ("dup-flood", run_id), "durable") for _ in range(20)]
    flood += [Dispatch("durable.runtime.run_activity", ("dup-flood", run_id, seq, 1), "durable")
              for seq in (0, 2) for _ in range(20)]
    client.store.enqueue(flood)
    assert handle.result(timeout=60) == 116
    assert _comparable(handle.history()) == expected
