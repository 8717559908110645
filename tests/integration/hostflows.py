"""Workflows for the multi-host test; workers import this module (``--import tests.integration.hostflows``).

Every activity returns a pure function of its arguments, so each workflow's
result is known in advance (``expected``) whichever host ran what. Around the
work, each activity appends one line to the shared log named by
``$MULTIHOST_LOG``, at its start and at its end::

    <host> <pid> <workflow id> <seq> <attempt> <activity> start|end <unix time>

``<host>`` is ``$HOST_LABEL``, which the test sets per network namespace (the
hostname is the same in all of them). Each line is a single ``write`` on an
``O_APPEND`` descriptor, well under ``PIPE_BUF``, so lines from concurrent
processes never interleave.
"""

from __future__ import annotations

import os
import time

import durable

LOG_ENV = "MULTIHOST_LOG"
HOST_ENV = "HOST_LABEL"
SLOW = 0.3  # seconds a queued activity works: cuts land mid-activity
MOD = 1_000_003


def _log(phase: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    info = durable.activity_info()
    host = os.environ.get(HOST_ENV, "?")
    name = info.activity.replace(":", ".").rsplit(".", 1)[-1]
    line = f"{host} {os.getpid()} {info.workflow_id} {info.seq} {info.attempt} {name} {phase} {time.time():.4f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _work(seconds: float, value: int) -> int:
    _log("start")
    time.sleep(seconds)
    _log("end")
    return value


# -- the arithmetic, shared by the activities and by the expected results ---------------------------


def step_value(i: int, acc: int) -> int:
    return (acc * 31 + i * 7 + 1) % MOD


def bump_value(i: int, acc: int) -> int:
    return (acc + i * i + 3) % MOD


def leaf_value(i: int) -> int:
    return (i * i * 13 + 5) % MOD


# -- activities ---------------------------------------------------------------------------------------


@durable.activity
def step(i: int, acc: int) -> int:
    """A queued activity (its own RQ job) that works for ``SLOW`` seconds."""
    return _work(SLOW, step_value(i, acc))


@durable.activity
def leaf(i: int) -> int:
    """A queued activity for fan-outs."""
    return _work(SLOW, leaf_value(i))


@durable.activity(inline=True)
def bump(i: int, acc: int) -> int:
    """An inline activity: runs inside the step that reaches it."""
    return _work(0.02, bump_value(i, acc))


# -- workflows ----------------------------------------------------------------------------------------


@durable.workflow
def pipeline(n: int, seed: int):
    """Queued steps, an inline bump after every odd one, a 1 s timer half-way."""
    acc = seed
    for i in range(n):
        acc = yield step(i, acc)
        if i % 2:
            acc = yield bump(i, acc)
        if i == n // 2:
            yield durable.sleep(1)
    return acc


@durable.workflow
def fan(n: int):
    """A fan-out of ``n`` queued leaves, then an inline bump of their sum."""
    parts = yield durable.all_of(*[leaf(i) for i in range(n)])
    total = yield bump(n, sum(parts) % MOD)
    return total


@durable.workflow
def gated(seed: int):
    """A step, a signal from the test (its payload goes into the next step), a 1.5 s timer, a step."""
    a = yield step(0, seed)
    payload = yield durable.wait_signal("go", timeout=120)
    if payload is None:
        return "no signal within 120 s"
    b = yield step(1, a + payload)
    yield durable.sleep(1.5)
    c = yield step(2, b)
    return c


@durable.workflow
def parent(seed: int):
    """Two child workflows and a step of its own, all at once; then an inline bump."""
    left, right, own = yield durable.all_of(pipeline(3, seed), fan(4), step(9, seed))
    return (yield bump(7, (left + right + own) % MOD))


# -- what each returns ------------------------------------------------------------------------------


def expected_pipeline(n: int, seed: int) -> int:
    acc = seed
    for i in range(n):
        acc = step_value(i, acc)
        if i % 2:
            acc = bump_value(i, acc)
    return acc


def expected_fan(n: int) -> int:
    return bump_value(n, sum(leaf_value(i) for i in range(n)) % MOD)


def expected_gated(seed: int, payload: int) -> int:
    return step_value(2, step_value(1, step_value(0, seed) + payload))


def expected_parent(seed: int) -> int:
    return bump_value(7, (expected_pipeline(3, seed) + expected_fan(4) + step_value(9, seed)) % MOD)
