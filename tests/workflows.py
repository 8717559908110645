"""Importable workflows and activities shared by the tests (workers import them by path)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import durable

CALLS: list[tuple[str, object]] = []  # in-process record of activity executions (fakeredis tests)


def _mark(name: str, value: object) -> None:
    CALLS.append((name, value))
    log = os.environ.get("DURABLE_TEST_CALL_LOG")
    if log:  # cross-process record for tests with worker subprocesses
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {name} {value!r}\n")


@durable.activity
def add(a: int, b: int) -> int:
    _mark("add", (a, b))
    return a + b


@durable.activity(inline=True)
def double(x: int) -> int:
    _mark("double", x)
    return 2 * x


@durable.activity(retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.0))
def flaky(key: str, fail_times: int) -> str:
    """Fails ``fail_times`` times per key (counted in a file so it works across processes)."""
    info = durable.activity_info()
    _mark("flaky", (key, info.attempt))
    if info.attempt <= fail_times:
        raise ConnectionError(f"flaky {key} attempt {info.attempt}")
    return f"{key}-ok-{info.attempt}"


@durable.activity(retry=durable.RetryPolicy(max_attempts=2, initial_interval=0.0))
def always_fails(msg: str) -> None:
    _mark("always_fails", msg)
    raise ValueError(msg)


@durable.activity
def slow(seconds: float, tag: str) -> str:
    """Sleeps, touching a marker file first so a test knows it is mid-activity."""
    marker = os.environ.get("DURABLE_TEST_MARKER")
    if marker:
        Path(marker).write_text(f"{os.getpid()}\n")
    _mark("slow", tag)
    time.sleep(seconds)
    return f"slept-{tag}"


@durable.activity(timeout=0.2, retry=durable.RetryPolicy(max_attempts=2, initial_interval=0.0))
def hangs() -> None:
    time.sleep(5)


@durable.workflow
def arithmetic(x: int):
    a = yield add(x, 1)
    b = yield double(a)
    c = yield add(b, 100)
    return c


@durable.workflow
def with_retry(key: str):
    value = yield flaky(key, 2)
    return value


@durable.workflow
def catches_failure():
    try:
        yield always_fails("boom")
    except durable.ActivityFailed as exc:
        recovered = yield add(1, 1)
        return f"caught {exc.error_type}: {exc.message}; then {recovered}"
    return "not reached"


@durable.workflow
def fails():
    yield add(1, 2)
    raise KeyError("missing thing")


@durable.workflow
def sleeper(seconds: float):
    started = yield add(0, 0)
    yield durable.sleep(seconds)
    done = yield add(started, 1)
    return done


@durable.workflow
def times_out():
    try:
        yield hangs()
    except durable.ActivityFailed as exc:
        return exc.error_type
    return "no timeout"


@durable.workflow
def long_chain(n: int, seconds: float):
    total = 0
    for i in range(n):
        total = yield add(total, i)
        if i == n // 2:
            yield slow(seconds, f"mid-{i}")
    return total


@durable.workflow
def not_a_result():
    yield add(1, 1)
    return threading.Lock()  # locks cannot be pickled


@durable.activity(retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.0))
def who_am_i() -> tuple:
    info = durable.activity_info()
    _mark("who_am_i", (info.idempotency_key, info.attempt))
    if info.attempt == 1:
        raise ConnectionError("first attempt always fails")
    return (info.workflow_id, info.seq, info.attempt, info.idempotency_key)


@durable.workflow
def identity():
    first = yield add(0, 0)
    me = yield who_am_i()
    return first, me


@durable.activity(retry=durable.RetryPolicy(max_attempts=5, initial_interval=30.0))
def fails_once_slowly(tag: str) -> str:
    if durable.activity_info().attempt == 1:
        raise ConnectionError("try again in 30 s")
    return tag


@durable.workflow
def slow_retry():
    value = yield fails_once_slowly("x")
    return value


@durable.activity
async def async_add(a: int, b: int) -> int:
    _mark("async_add", (a, b))
    return a + b


@durable.workflow
def uses_async(x: int):
    value = yield async_add(x, x)
    return value


MODE = {"activity": "add"}


@durable.workflow
def changes_shape():
    if MODE["activity"] == "add":
        yield add(1, 1)
    else:
        yield double(1)
    yield durable.sleep(3600)
    return "done"


@durable.activity(inline=True, retry=durable.RetryPolicy(max_attempts=2, initial_interval=0.0))
def inline_flaky(tag: str) -> str:
    attempt = durable.activity_info().attempt
    _mark("inline_flaky", (tag, attempt))
    if attempt == 1:
        raise ConnectionError("inline first attempt fails")
    return f"{tag}-{attempt}"


@durable.workflow
def inline_chain(n: int):
    total = 0
    for i in range(n):
        total = yield double(total + i)
    retried = yield inline_flaky("r")
    return total, retried
