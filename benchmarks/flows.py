"""The workflows and activities the benchmarks run (importable by worker subprocesses:
``durable worker --import benchmarks.flows``)."""

from __future__ import annotations

import time
from typing import Any

from rq import Queue, get_current_job

import durable
from durable.events import ActivityCompleted, Event, command_event

IO_SECONDS = 0.02  # what an I/O-bound activity waits (the throughput scenario)


@durable.activity
def noop(i: int) -> int:
    return i


@durable.activity(inline=True)
def noop_inline(i: int) -> int:
    return i


@durable.activity
def io_wait(i: int) -> int:
    time.sleep(IO_SECONDS)
    return i


@durable.workflow
def sequence(n: int) -> Any:
    """``n`` queued activities, one after the other."""
    for i in range(n):
        yield noop(i)
    return n


@durable.workflow
def inline_sequence(n: int) -> Any:
    """``n`` inline activities: the whole run is one RQ job, each result committed before the next."""
    for i in range(n):
        yield noop_inline(i)
    return n


@durable.workflow
def io_sequence(n: int) -> Any:
    """``n`` queued activities that each wait ``IO_SECONDS`` (I/O-bound work)."""
    for i in range(n):
        yield io_wait(i)
    return n


@durable.workflow
def waiter() -> Any:
    """Waits for signal ``go``: a workflow that costs only storage while it waits."""
    payload = yield durable.wait_signal("go")
    return payload


def sequence_history(count: int, now: float | None = None) -> list[Event]:
    """The history ``sequence`` records for its first ``count`` activities, synthesized."""
    now = time.time() if now is None else now
    events: list[Event] = []
    for i in range(count):
        events.append(command_event(i, noop(i), now))
        events.append(ActivityCompleted(seq=i, time=now, result=i))
    return events


# -- the raw RQ peer: a job that enqueues the next one ----------------------------------------


def rq_hop(remaining: int, queue_name: str) -> int:
    """Raw RQ chain hop: enqueue the next hop (same job options as durable's jobs)."""
    if remaining > 0:
        job = get_current_job()
        assert job is not None
        Queue(queue_name, connection=job.connection).enqueue(
            rq_hop, remaining - 1, queue_name, result_ttl=0, job_timeout=-1
        )
    return remaining
