"""Importable workflows and activities shared by the tests (workers import them by path)."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
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


# -- the full vocabulary ------------------------------------------------------------------------


@durable.workflow
def pr_monitor(pr: int, reminder_every: float):
    """Signals racing a timer: remind until 'closed' arrives."""
    reminders = 0
    while True:
        closed = yield durable.wait_signal("closed", timeout=reminder_every)
        if closed is not None:
            return f"#{pr} {closed} after {reminders} reminders"
        reminders += 1
        durable.set_status({"reminders": reminders})
        yield add(reminders, 0)


@durable.workflow
def collect_signals(n: int):
    got = []
    for _ in range(n):
        got.append((yield durable.wait_signal("item")))
    return got


@durable.workflow
def fan_out(n: int):
    results = yield durable.all_of(*[add(i, i) for i in range(n)])
    return results


@durable.workflow
def race_timer(seconds: float):
    first = yield durable.any_of(durable.wait_signal("go"), durable.sleep(seconds))
    second = yield durable.any_of(add(1, 1), durable.sleep(3600))
    late = yield durable.wait_signal("go")  # the signal that lost the first race is still buffered
    return first, second, late


@durable.workflow
def child_adds(x: int):
    value = yield add(x, 1000)
    return value


@durable.workflow
def child_fails():
    yield add(0, 0)
    raise ValueError("child broke")


@durable.workflow
def parent_of_children(x: int):
    a = yield child_adds(x)
    b, c = yield durable.all_of(child_adds(x + 1), child_adds.options(workflow_id=f"explicit-{x}")(x + 2))
    try:
        yield child_fails()
    except durable.WorkflowFailed as exc:
        return a, b, c, exc.error_type
    return a, b, c, None


@durable.workflow
def waits_forever():
    value = yield durable.wait_signal("never")
    return value


@durable.workflow
def parent_waiting_on_child():
    value = yield waits_forever()
    return value


@durable.workflow
def compensates():
    try:
        yield durable.wait_signal("never")
    except durable.Cancelled:
        undone = yield add(-1, 0)
        return f"compensated {undone}"
    return "not cancelled"


@durable.workflow
def counter(n: int, stop: int):
    yield add(n, 0)
    if n < stop:
        yield durable.continue_as_new(n + 1, stop)
    return n


@durable.workflow
def recorded_values():
    when = yield durable.now()
    ident = yield durable.uuid4()
    roll = yield durable.random()
    pid = yield durable.side_effect(os.getpid)
    yield durable.wait_signal("go")
    return when, ident, roll, pid


PATCHED = {"on": False}


@durable.workflow
def versioned():
    if PATCHED["on"]:
        if (yield durable.patched("v2")):
            first = yield double(21)
        else:
            first = yield add(1, 1)
    else:
        first = yield add(1, 1)
    yield durable.wait_signal("go")
    return first


@durable.workflow
def month_long(days: int):
    started = yield durable.now()
    yield durable.sleep(timedelta(days=days))
    finished = yield durable.now()
    greeting = yield add(1, 2)
    return (finished - started).days, greeting


@durable.workflow
def loser_timer():
    first = yield durable.any_of(add(1, 1), durable.sleep(60))
    yield durable.sleep(120)
    return first


@durable.activity
def big(n: int) -> bytes:
    _mark("big", n)
    return b"x" * n


@durable.workflow
def big_result(n: int):
    try:
        yield big(n)
    except durable.ActivityFailed as exc:
        return exc.error_type
    return "fit"


@durable.workflow
def daily_reminder(day: int, until: int):
    """An endless reminder loop in bounded history: a fresh run every week."""
    for _ in range(7):
        yield durable.sleep(timedelta(days=1))
        day += 1
        yield add(day, 0)
        if day >= until:
            return day
    yield durable.continue_as_new(day, until)


@durable.workflow
def calls_missing_activity():
    """Yields an activity whose module no worker has (yet): a half-done deploy."""
    from durable.commands import ActivityCall, ActivityOptions

    value = yield ActivityCall("not_deployed_yet:handler", (1,), {}, ActivityOptions())
    return value


@durable.workflow
def add_then_signal():
    """An activity, then a signal's payload added to its result."""
    first = yield add(1, 2)
    extra = yield durable.wait_signal("go")
    total = yield add(first, extra)
    return total


# -- for durable inspect / history (tests/test_cli_operator.py finds lines by their "# inspect:" marks) -------------


@durable.workflow
def inspected(order: str, items: int):
    total = yield add(items, 10)
    note = f"order {order}: {total}"
    durable.set_status({"stage": "sleeping"})
    yield durable.sleep(3600)  # inspect: timer
    durable.set_status({"stage": "approval"})
    reply = yield durable.wait_signal("approve", timeout=600)  # inspect: signal
    return note, reply


def _poll(target: str, tries: int):
    """A plain generator helper a workflow delegates to with ``yield from``."""
    seen = []
    for attempt in range(tries):
        status = yield durable.wait_signal(f"{target}-status")  # inspect: helper
        seen.append(status)
        if status == "done":
            return attempt
    return -1


@durable.workflow
def tallied(n: int):
    """A long run of activities, then a long sleep (replayed and inspected from packed blocks)."""
    total = 0
    for i in range(n):
        total = yield add(total, i)
    yield durable.sleep(3600)
    return total


@durable.workflow
def uses_helper(target: str):
    prepared = yield add(1, 2)
    attempts = yield from _poll(target, 3)  # inspect: caller
    return prepared, attempts


@durable.workflow
def approvals():
    votes = yield durable.all_of(durable.wait_signal("alice"), durable.wait_signal("bob"))  # inspect: all_of
    return votes


# -- observability: activities that log through the application's own logger ----------------
APP_LOG = logging.getLogger("myapp")


@durable.activity
def greet(name: str) -> str:
    APP_LOG.info("greeting %s", name)
    return f"hello {name}"


@durable.activity(inline=True)
def shout(text: str) -> str:
    APP_LOG.info("shouting %s", text)
    return text.upper()


@durable.activity(retry=durable.RetryPolicy(max_attempts=3, initial_interval=0.0))
def fails_first_time(key: str) -> str:
    attempt = durable.activity_info().attempt
    APP_LOG.info("trying %s", key)
    if attempt == 1:
        raise ConnectionError(f"{key}: attempt 1 always fails")
    return f"{key}-{attempt}"


@durable.workflow
def observed(name: str):
    """Two activities (one queued, one inline) and one that fails once, then succeeds."""
    greeting = yield greet(name)
    loud = yield shout(greeting)
    retried = yield fails_first_time(name)
    return loud, retried


@durable.workflow
def shape_then_work():
    """Its first command depends on MODE (a deploy that changes it breaks replay)."""
    if MODE["activity"] == "add":
        yield add(1, 1)
    else:
        yield double(1)
    total = yield add(20, 22)
    return total
