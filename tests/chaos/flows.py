"""Workflows for the chaos suite; workers import this module (``--import tests.chaos.flows``).

Every activity is a pure function of its arguments (so the expected result of a
workflow is a pure function of its inputs: ``expected_chaos``), except that it
first appends one short line to the shared execution log named by
``$DURABLE_CHAOS_LOG``::

    <workflow id> <seq> <pid> <unix time>

with a single ``write`` on an ``O_APPEND`` descriptor (a line of well under
``PIPE_BUF`` bytes, so concurrent appends from several processes never
interleave). The test counts the executions per (workflow, seq) from it, and
reads the time a re-run started. Each activity then sleeps a little so that
SIGKILLs land in the middle of activities.
"""

from __future__ import annotations

import os
import random
import time

import durable

LOG_ENV = "DURABLE_CHAOS_LOG"
MOD = 1_000_003


def _log_execution() -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    info = durable.activity_info()
    line = f"{info.workflow_id} {info.seq} {os.getpid()} {time.time():.3f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _nap(low: float = 0.01, high: float = 0.2) -> None:
    time.sleep(random.uniform(low, high))


# -- the pure arithmetic, shared by the activities and by the expected result -----------------


def work_value(i: int, acc: int) -> int:
    return (acc * 31 + i * 7 + 1) % MOD


def quick_value(i: int, acc: int) -> int:
    return (acc + i * i + 3) % MOD


def twin_value(i: int, acc: int) -> int:
    return (acc * 17 + i + 11) % MOD


def mix_value(a: int, b: int) -> int:
    return (a * 3 + b) % MOD


# -- activities ------------------------------------------------------------------------------------


@durable.activity
def work(i: int, acc: int) -> int:
    """A queued activity (its own RQ job)."""
    _log_execution()
    _nap()
    return work_value(i, acc)


@durable.activity(inline=True)
def quick(i: int, acc: int) -> int:
    """An inline activity (runs inside the workflow's ``advance`` step)."""
    _log_execution()
    _nap()
    return quick_value(i, acc)


@durable.activity
def twin(i: int, acc: int) -> int:
    """The second branch of an ``all_of``, in parallel with ``work``."""
    _log_execution()
    _nap()
    return twin_value(i, acc)


@durable.activity
def slow(seconds: float, x: int) -> int:
    """A long activity, for the recovery-time test."""
    _log_execution()
    time.sleep(seconds)
    return x * 2


@durable.activity
def step(i: int, acc: int, seconds: float) -> int:
    """One of a sequence of fixed-length activities, for the Redis-loss test."""
    _log_execution()
    time.sleep(seconds)
    return work_value(i, acc)


# -- workflows ------------------------------------------------------------------------------------


def plan(steps: int) -> list[str]:
    """What step ``i`` of ``chaos_flow`` does: 'work' (queued), 'quick' (inline) or 'pair' (all_of)."""
    return ["pair" if i % 4 == 3 else "quick" if i % 4 == 1 else "work" for i in range(steps)]


def activity_count(steps: int) -> int:
    return sum(2 if kind == "pair" else 1 for kind in plan(steps))


def command_count(steps: int) -> int:
    """Sequence numbers a completed ``chaos_flow`` uses: its activities, one timer, one signal wait."""
    return activity_count(steps) + 2


@durable.workflow
def chaos_flow(seed: int, steps: int, nap: float):
    """``steps`` steps of queued, inline and paired (``all_of``) activities, with a durable
    sleep before step ``steps // 3`` and a wait for signal ``go`` before step ``steps // 2``."""
    acc = seed
    for i, kind in enumerate(plan(steps)):
        if i == steps // 3:
            yield durable.sleep(nap)
        if i == steps // 2:
            payload = yield durable.wait_signal("go")
            acc = (acc + payload) % MOD
        if kind == "pair":
            a, b = yield durable.all_of(work(i, acc), twin(i, acc))
            acc = mix_value(a, b)
        elif kind == "quick":
            acc = yield quick(i, acc)
        else:
            acc = yield work(i, acc)
    return acc


def expected_chaos(seed: int, steps: int, payload: int) -> int:
    acc = seed
    for i, kind in enumerate(plan(steps)):
        if i == steps // 2:
            acc = (acc + payload) % MOD
        if kind == "pair":
            acc = mix_value(work_value(i, acc), twin_value(i, acc))
        elif kind == "quick":
            acc = quick_value(i, acc)
        else:
            acc = work_value(i, acc)
    return acc


@durable.workflow
def long_activity(seconds: float, x: int):
    return (yield slow(seconds, x))


@durable.workflow
def sequence(n: int, seed: int, seconds: float):
    acc = seed
    for i in range(n):
        acc = yield step(i, acc, seconds)
    return acc


def expected_sequence(n: int, seed: int) -> int:
    acc = seed
    for i in range(n):
        acc = work_value(i, acc)
    return acc


@durable.workflow
def inline_tail(x: int, seconds: float):
    """A queued activity, then two inline ones, the second slow: the step that runs the
    queued one commits its result with the first inline one, then runs the second."""
    a = yield work(0, x)
    b = yield quick(1, a)
    return (yield slow.options(inline=True)(seconds, b))


def expected_inline_tail(x: int) -> int:
    return quick_value(1, work_value(0, x)) * 2
