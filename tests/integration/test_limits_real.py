"""``durable.Limit`` and named queues with real worker processes on a real redis-server.

Limited activities (tests/limit_flows.py) log each start and end with their pid,
so the checks below look at what really ran where and when: no two runs of a
concurrency-1 activity overlap, starts of a 2-per-second activity are 0.5 s
apart, a killed worker's slot frees itself within the lease (2 s here), a rate
holds across a restart of every worker, and a named queue's activities run
only on the workers that serve it. The figures each test measured are printed
(``pytest -s``); docs/limits.md quotes them.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import redis

import durable
from durable.store import Store
from tests import limit_flows as flows
from tests import workflows

from .conftest import LEASE_TTL, Workers, durable_worker_argv, wait_for

TOLERANCE = 0.05  # s: between taking the start in Redis and the activity's first line, in another process


def start_workers(workers: Workers, count: int, *extra: str) -> list[int]:
    """Start ``count`` workers and wait until each serves (publishes its counters): a worker
    still importing would leave every job to the first one up."""
    procs = [workers.start(durable_worker_argv(workers.url, "--import", "tests.limit_flows", *extra))
             for _ in range(count)]
    pids = [proc.pid for proc in procs]
    store = Store(redis.Redis.from_url(workers.url))
    wait_for(lambda: set(pids) <= {int(w["pid"]) for w in store.worker_stats()}, 30, f"workers {pids} to serve")
    store.conn.close()
    return pids


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def figures(label: str, values: list[float]) -> str:
    line = (f"{label}: min {min(values):.3f} s, median {statistics.median(values):.3f} s, "
            f"max {max(values):.3f} s over {len(values)}")
    print(line)
    return line


def test_three_workers_never_overlap_a_limited_activity_and_space_its_starts(
        workers: Workers, client: durable.Client, conn: redis.Redis, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.log")
    pids = start_workers(workers, 3)
    began = time.monotonic()
    # Long runs (1.2 s) make the one slot bind, short ones (0.05 s) the rate: both are checked.
    handles = [client.start(flows.notify, i, log, 1.2 if i % 2 else 0.05, workflow_id=f"slack-{i}")
               for i in range(10)]
    assert [h.result(timeout=90) for h in handles] == [2 * i for i in range(10)]
    elapsed = time.monotonic() - began
    runs = flows.intervals(log)
    assert len(runs) == 10  # each ran once: nobody died
    for (_start, end, *_), (next_start, *_) in zip(runs, runs[1:], strict=False):
        assert next_start >= end, f"two runs overlap: {runs}"
    starts = [start for start, *_ in runs]
    assert min(gaps(starts)) >= 0.5 - TOLERANCE, figures("starts apart", gaps(starts))
    assert {attempt for *_, attempt in runs} == {1}  # waiting used up no attempt
    assert {pid for _s, _e, pid, *_ in runs} <= set(pids)
    assert len({pid for _s, _e, pid, *_ in runs}) >= 2, "every run on one worker: nothing was tested across workers"
    for handle in handles:
        assert "activity_retrying" not in [e["type"] for e in handle.history()]
    assert conn.zcard(Store(conn).limit_keys("test-slack")[0]) == 0  # every slot given back
    pairs = list(zip(runs, runs[1:], strict=False))
    figures("after a short run, next start (the rate binds)", [b[0] - a[0] for a, b in pairs if a[1] - a[0] < 0.5])
    figures("after a long run, idle slot (the slot binds)", [b[0] - a[1] for a, b in pairs if a[1] - a[0] >= 0.5])
    print(f"10 workflows through the limit on 3 workers in {elapsed:.2f} s "
          f"({len({pid for _s, _e, pid, *_ in runs})} workers ran the activity)")


def test_a_slot_outlives_the_lease_while_its_attempt_runs(
        workers: Workers, client: durable.Client, tmp_path: Path) -> None:
    """The keeper renews the slot with the job's lease: a 3 s call under a 2 s lease keeps it."""
    log = str(tmp_path / "calls.log")
    start_workers(workers, 2)
    handles = [client.start(flows.notify, i, log, 3.0, workflow_id=f"long-{i}") for i in range(2)]
    assert [h.result(timeout=60) for h in handles] == [0, 2]
    (first_start, first_end, *_), (second_start, *_) = flows.intervals(log)
    assert first_end - first_start >= 3.0 > float(LEASE_TTL)
    assert second_start >= first_end, "the slot lapsed under a running attempt"
    print(f"second run started {second_start - first_end:.3f} s after the first ended")


def test_a_sigkilled_holder_frees_its_slot_within_the_lease(
        workers: Workers, client: durable.Client, conn: redis.Redis, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.log")
    pids = start_workers(workers, 2)
    first = client.start(flows.notify_slow_first, 1, log, 60.0, workflow_id="holder")
    wait_for(lambda: Path(log).exists() and flows.read_log(log), 30, "the first run to start")
    holder_pid = flows.read_log(log)[0][2]
    second = client.start(flows.notify_slow_first, 2, log, 0.1, workflow_id="waiter")
    time.sleep(1.5)  # the waiter is put off, again and again: the slot is held
    assert len(flows.read_log(log)) == 1
    slots = Store(conn).limit_state("test-slack")[0]
    assert len(slots) == 1 and next(iter(slots)).startswith("holder#0#1#")
    killed = time.time()
    workers.kill(workers.by_pid(holder_pid))
    assert first.result(timeout=60) == 2 and second.result(timeout=60) == 4
    runs = flows.intervals(log)
    after = [start for start, *_ in runs if start > killed]
    freed = min(after) - killed
    lease = float(LEASE_TTL)
    # The slot was renewed every 0.25 s or so: it lapses up to 2 s after the kill, and the waiter
    # (back every 0.2-1 s) or the holder's recovered job (after its own lease) takes it soon after.
    # Not before: nothing gave it back (a slot released at the kill would go within 1 s).
    assert lease / 2 <= freed <= lease + 2.5, f"slot freed {freed:.2f} s after the kill"
    assert {attempt for *_, attempt in runs} == {1}  # the killed attempt was not recorded: it ran again as 1
    survivor = next(pid for pid in pids if pid != holder_pid)
    assert {pid for start, _e, pid, *_ in runs if start > killed} == {survivor}
    for handle in (first, second):
        completed = [e for e in handle.history() if e["type"] == "activity_completed"]
        assert [e["attempt"] for e in completed] == [1]
    print(f"slot taken again {freed:.3f} s after SIGKILL of its holder (lease {lease:g} s)")


def test_a_rate_holds_across_a_restart_of_every_worker(
        workers: Workers, client: durable.Client, tmp_path: Path) -> None:
    """One start every 5 s: a start just before every worker dies still counts for the next."""
    log = str(tmp_path / "calls.log")
    start_workers(workers, 1)
    assert client.start(flows.pace, 1, log).result(timeout=30) == 1
    workers.kill_all()
    start_workers(workers, 1)
    assert client.start(workflows.arithmetic, 1).result(timeout=30) == 104  # the new worker is up
    asked = time.time()
    (first, *_), = flows.intervals(log)
    assert asked - first < 5.0 - 1.0, "the restart took too long for this test to show anything"
    assert client.start(flows.pace, 2, log).result(timeout=30) == 2
    (_, *_), (second, *_) = flows.intervals(log)
    assert second - first >= 5.0 - TOLERANCE, f"started {second - first:.2f} s after the first, across a restart"
    print(f"second start {second - first:.3f} s after the first; asked {asked - first:.3f} s after it, "
          "by a freshly started worker")


def test_a_named_queue_runs_only_on_the_workers_that_serve_it(workers: Workers, client: durable.Client) -> None:
    default = start_workers(workers, 2)
    (slack,) = start_workers(workers, 1, "--queue", "slack")
    handles = [client.start(flows.queues_used, workflow_id=f"queues-{i}") for i in range(6)]
    results = [h.result(timeout=60) for h in handles]
    assert {slack_pid for _, slack_pid, _ in results} == {slack}
    assert {pid for before, _, after in results for pid in (before, after)} <= set(default), (
        f"an activity of the workflow's queue ran on the slack worker {slack}: {results}")
