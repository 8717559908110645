"""Importable workflows and activities shared by the tests (workers import them by path)."""

from __future__ import annotations

import os
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
    return (lambda: None).__globals__  # module globals hold modules: not picklable
