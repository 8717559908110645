"""Workflows and activities under ``durable.Limit``s, for tests/test_limits.py and the real-worker
tests in tests/integration/test_limits_real.py (workers import this module by path).

Every limited activity appends one line per start and per end to the file its
caller names: ``start|end <time> <pid> <workflow id> <seq> <attempt>`` (durable's
clock: the wall clock in a worker, the virtual one in the testing kit), so that
a test can check, across processes, that no two ran at once and how far apart
they started.
"""

from __future__ import annotations

import os
import time

import durable
from durable import clock

# One name, one setting, shared by every activity of the "slack" queue below.
SLACK = durable.Limit("test-slack", concurrency=1, rate=2)
RATE_ONLY = durable.Limit("test-rate", rate=1, per=5.0)  # a start every 5 s, any number at once
PAIR = durable.Limit("test-pair", concurrency=2)


def _log(path: str, what: str) -> None:
    info = durable.activity_info()
    with open(path, "a") as fh:  # one short write per line: lines from several processes do not interleave
        fh.write(f"{what} {clock.now():.6f} {os.getpid()} {info.workflow_id} {info.seq} {info.attempt}\n")


@durable.activity(limit=SLACK)
def post(i: int, log: str, seconds: float = 0.1) -> int:
    """A Slack call: at most one at once, two starts a second, across every worker."""
    _log(log, "start")
    time.sleep(seconds)
    _log(log, "end")
    return i * 2


@durable.activity(limit=SLACK, inline=True)
def post_inline(i: int, log: str) -> int:
    """The same limit, run inside the step that reaches it."""
    _log(log, "start")
    _log(log, "end")
    return i * 3


@durable.activity(limit=SLACK)
def post_slow_first(i: int, log: str, seconds: float) -> int:
    """Takes ``seconds`` on its workflow's first run, no time on a re-run (its worker was killed)."""
    workflow_id = durable.activity_info().workflow_id
    first = not os.path.exists(log) or all(row[3] != workflow_id for row in read_log(log))
    _log(log, "start")
    if first:
        time.sleep(seconds)
    _log(log, "end")
    return i * 2


@durable.activity(limit=RATE_ONLY)
def paced(i: int, log: str) -> int:
    _log(log, "start")
    _log(log, "end")
    return i


@durable.activity(limit=PAIR)
def held_long(i: int, log: str, seconds: float) -> int:
    """Holds one of two slots for ``seconds``."""
    _log(log, "start")
    time.sleep(seconds)
    _log(log, "end")
    return i


@durable.activity(limit=RATE_ONLY, retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.0))
def flaky_paced(log: str) -> str:
    """Fails its first attempt; the retry is due at once, but the limit's rate spaces it."""
    _log(log, "start")
    _log(log, "end")
    attempt = durable.activity_info().attempt
    if attempt == 1:
        raise ConnectionError("first attempt fails")
    return f"ok on attempt {attempt}"


@durable.workflow
def pace_flaky(log: str):
    got = yield flaky_paced(log)
    return got


@durable.workflow
def notify(i: int, log: str, seconds: float = 0.1):
    got = yield post(i, log, seconds)
    return got


@durable.workflow
def notify_slow_first(i: int, log: str, seconds: float):
    got = yield post_slow_first(i, log, seconds)
    return got


@durable.workflow
def notify_inline(i: int, log: str):
    first = yield post_inline(i, log)
    second = yield post_inline(i + 100, log)
    return first + second


@durable.workflow
def pace(i: int, log: str):
    got = yield paced(i, log)
    return got


@durable.workflow
def hold(i: int, log: str, seconds: float):
    got = yield held_long(i, log, seconds)
    return got


# -- a named queue served by its own workers ----------------------------------------------------


@durable.activity(queue="slack")
def on_slack_queue() -> int:
    return os.getpid()


@durable.activity
def on_workflow_queue() -> int:
    return os.getpid()


@durable.workflow
def queues_used():
    """Which process ran each activity: the workflow's queue, the slack queue, the workflow's again."""
    before = yield on_workflow_queue()
    slack = yield on_slack_queue()
    after = yield on_workflow_queue()
    return before, slack, after


def read_log(path: str) -> list[tuple[str, float, int, str, int, int]]:
    """The log's lines as (what, time, pid, workflow id, seq, attempt), in file order."""
    rows = []
    with open(path) as fh:
        for line in fh:
            what, at, pid, workflow_id, seq, attempt = line.split()
            rows.append((what, float(at), int(pid), workflow_id, int(seq), int(attempt)))
    return rows


def intervals(path: str) -> list[tuple[float, float, int, str, int]]:
    """Each run as (start, end, pid, workflow id, attempt), by start time; a run whose end is
    missing (its worker was killed) ends at infinity."""
    rows = read_log(path)
    runs = []
    for i, (what, at, pid, workflow_id, seq, attempt) in enumerate(rows):
        if what != "start":
            continue
        end = next((r[1] for r in rows[i + 1:] if r[0] == "end" and r[2] == pid and r[3] == workflow_id
                    and r[4] == seq), float("inf"))
        runs.append((at, end, pid, workflow_id, attempt))
    return sorted(runs)
