"""Workflows for the connection tests: many short steps and some durable sleeps.

Workers import this module by the workflow's path. ``add`` (from ``tests.workflows``)
writes every execution to ``$DURABLE_TEST_CALL_LOG``, so a test can count re-runs.
"""

from __future__ import annotations

import durable
from tests.workflows import add


@durable.workflow
def steady(n: int, sleep_every: int, nap: float):
    """``n`` queued activities, with a durable ``sleep(nap)`` after every ``sleep_every``th."""
    total = 0
    for i in range(n):
        total = yield add(total, i)
        if sleep_every and i % sleep_every == sleep_every - 1:
            yield durable.sleep(nap)
    return total


@durable.workflow
def drift(n: int):
    """A value fixed at first execution (``durable.random()``) in the middle of ``n`` activities."""
    total, x = 0, None
    for i in range(n):
        total = yield add(total, i)
        if i == 1:
            x = yield durable.random()
    return x, total
