"""Stopping workers: SIGTERM finishes the step or hands it back within the stop
timeout, a second SIGTERM hands it back at once, and a rolling restart of
every worker during a run loses nothing and stalls nothing for long.

Real redis-server, real ``durable worker`` processes, real signals.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import durable
from tests.integration import flows

from .conftest import Proc, Workers, durable_worker_argv, wait_for
from .test_real_workers import assert_history_exactly_once

pytestmark = pytest.mark.integration

FLOWS = "tests.integration.flows"


def worker(workers: Workers, *extra: str, name: str | None = None) -> Proc:
    proc = workers.start(durable_worker_argv(workers.url, "--import", FLOWS, *extra), name=name)
    wait_for(lambda: "Listening on" in proc.log.read_text() or proc.popen.poll() is not None, 30,
             f"{proc.name} to start listening")
    assert proc.popen.poll() is None, proc.log.read_text()
    return proc


def stop(workers: Workers, proc: Proc, bound: float) -> float:
    """SIGTERM ``proc``; the seconds it took to exit, asserting it exited 0 within ``bound``."""
    asked = time.monotonic()
    workers.signal(proc, signal.SIGTERM)
    wait_for(lambda: proc.popen.poll() is not None, bound, f"{proc.name} to exit after SIGTERM")
    took, code = time.monotonic() - asked, proc.popen.returncode
    assert code == 0, f"{proc.name} exited {code}:\n{proc.log.read_text()}"
    return took


def pids(marker: Path) -> list[int]:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def test_sigterm_lets_the_current_step_finish(workers: Workers, client: durable.Client) -> None:
    a = worker(workers, "--stop-timeout", "20")
    handle = client.start(flows.parallel_naps, 1, 2.0)
    wait_for(lambda: any(e["type"] == "activity_scheduled" for e in handle.history()), 10, "the nap to start")
    time.sleep(0.3)
    took = stop(workers, a, 15)
    assert 1.0 < took < 6, f"exited after {took:.1f} s: it should have waited for the 2 s nap, no more"
    assert handle.result(timeout=1)[0][0] == a.pid  # finished and recorded by the stopping worker itself
    assert_history_exactly_once(handle.history())


def test_a_step_that_outlives_the_stop_timeout_is_handed_back(
        workers: Workers, client: durable.Client, tmp_path: Path) -> None:
    marker = tmp_path / "stubborn.pids"
    a = worker(workers, "--stop-timeout", "1")
    handle = client.start(flows.stubborn_flow, str(marker), 120.0)
    wait_for(lambda: pids(marker), 10, "the stubborn activity to start")
    b = worker(workers, "--stop-timeout", "1")
    took = stop(workers, a, 10)
    assert took < 5, f"the stop timeout is 1 s but the worker took {took:.1f} s"
    started = time.monotonic()
    assert handle.result(timeout=15) == b.pid
    # handed back at once: no waiting for the 2 s lease to lapse and be swept
    assert time.monotonic() - started < 2.0 + 1.5
    assert pids(marker) == [a.pid, b.pid]
    assert_history_exactly_once(handle.history())
    assert "abandoning it" in a.log.read_text()


def test_a_second_sigterm_hands_the_step_back_at_once(
        workers: Workers, client: durable.Client, tmp_path: Path) -> None:
    marker = tmp_path / "stubborn.pids"
    a = worker(workers, "--stop-timeout", "600")
    handle = client.start(flows.stubborn_flow, str(marker), 120.0)
    wait_for(lambda: pids(marker), 10, "the stubborn activity to start")
    b = worker(workers)
    workers.signal(a, signal.SIGTERM)
    time.sleep(1.5)  # RQ ignores a second signal within 1 s of the first
    assert a.popen.poll() is None, "the first SIGTERM must wait for the step"
    took = stop(workers, a, 10)
    assert took < 3
    assert handle.result(timeout=15) == b.pid
    assert pids(marker) == [a.pid, b.pid]
    assert_history_exactly_once(handle.history())


def test_a_rolling_restart_loses_nothing_and_stalls_nothing(workers: Workers, client: durable.Client) -> None:
    stop_timeout = 3.0
    pool = [worker(workers, "--stop-timeout", str(stop_timeout), name=f"first-{i}") for i in range(3)]
    steps, nap = 10, 0.15
    handles = [client.start(flows.chain, steps, nap) for _ in range(12)]
    time.sleep(1.0)
    stops = []
    for i, old in enumerate(pool):  # replace every worker, one at a time, while the run goes on
        stops.append(stop(workers, old, stop_timeout + 8))
        worker(workers, "--stop-timeout", str(stop_timeout), name=f"second-{i}")
        time.sleep(0.7)
    expected = sum(range(steps))
    for handle in handles:
        assert handle.result(timeout=60) == expected, workers.logs()
    worst, where = 0.0, ""
    for handle in handles:
        history = handle.history()
        assert_history_exactly_once(history)
        for before, after in zip(history, history[1:], strict=False):
            if after["time"] - before["time"] > worst:
                worst = after["time"] - before["time"]
                where = f"{before['type']} #{before['seq']} -> {after['type']} #{after['seq']} in {handle.id}"
    late = []
    for handle in handles:
        history = handle.history()
        started = {e["seq"]: e for e in history if e["type"] == "timer_started"}
        late += [e["time"] - started[e["seq"]]["fire_at"] for e in history if e["type"] == "timer_fired"]
    assert min(late) >= 0, "a timer fired early"
    print(f"timers fired {sorted(round(x, 2) for x in late)} s after their time")
    print(f"rolling restart: exits after SIGTERM {[round(s, 2) for s in stops]} s; "
          f"longest gap between two events of one workflow {worst:.2f} s ({where})")
    assert max(stops) < stop_timeout + 3
    # The recovery bound: a stopped worker's work is handed back at once, so no workflow
    # waits for a lease (2 s here) to lapse on top of its own sleep and the queues' backlog.
    lease_ttl = 2.0
    assert worst < lease_ttl + 1.0, f"a workflow stalled {worst:.2f} s ({where})"


def test_an_idle_worker_takes_new_work_at_once_after_serving_its_own_queue(
        workers: Workers, client: durable.Client) -> None:
    # After a job from its own queue, the worker's next pass looks at the shared queue
    # first; when both are empty it must still wait on the shared one, where a new
    # workflow arrives, not on its own (which would add up to 0.5 s to every start).
    worker(workers)
    delays = []
    for _ in range(4):
        handle = client.start(flows.parallel_naps, 1, 0.0)
        started = time.time()
        handle.result(timeout=10)
        time.sleep(0.6)  # idle: blocked in its dequeue
        delays.append(handle.history()[0]["time"] - started)
    assert max(delays) < 0.3, f"first steps took {[round(d, 3) for d in delays]} s to start"
