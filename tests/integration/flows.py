"""Workflows for the real-worker vocabulary tests that ``tests.workflows`` lacks.

Workers import this module by path (``--import tests.integration.flows``).
``V2`` is read once at import, so a worker process started with ``FLOWS_V2=1``
runs the patched code and one without it runs the code as it was before the
patch: two deployed versions of the same workflow in real processes.
"""

from __future__ import annotations

import os
import time

import durable

V2 = os.environ.get("FLOWS_V2") == "1"


# -- fan-out across worker processes --------------------------------------------------------------


@durable.activity
def nap(i: int, seconds: float) -> tuple[int, int]:
    """Sleeps, then says which process did the work."""
    time.sleep(seconds)
    return os.getpid(), i


@durable.workflow
def parallel_naps(n: int, seconds: float):
    results = yield durable.all_of(*[nap(i, seconds) for i in range(n)])
    return results


# -- patched: the deploy story ----------------------------------------------------------------------


@durable.activity
def old_step(x: int) -> str:
    return f"old:{x + 1}"


@durable.activity
def new_step(x: int) -> str:
    return f"new:{x * 2}"


@durable.activity
def code_version() -> str:
    """Which code the worker that ran this activity had loaded."""
    return "v2" if V2 else "v1"


@durable.workflow
def deployable(x: int):
    if V2:
        if (yield durable.patched("v2")):
            path = yield new_step(x)
        else:
            path = yield old_step(x)
    else:
        path = yield old_step(x)
    got = yield durable.wait_signal("go")
    finished_on = yield code_version()
    return path, got, finished_on


# -- stopping workers: SIGTERM, stop timeouts, rolling restarts -------------------------------------


@durable.activity
def stubborn(marker: str, seconds: float) -> int:
    """Takes ``seconds`` the first time it runs, no time after: each run appends its pid to ``marker``."""
    first = not os.path.exists(marker)
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    if first:
        time.sleep(seconds)
    return os.getpid()


@durable.workflow
def stubborn_flow(marker: str, seconds: float):
    pid = yield stubborn(marker, seconds)
    return pid


@durable.workflow
def chain(n: int, seconds: float):
    """``n`` naps one after the other, with a short durable sleep half-way."""
    total = 0
    for i in range(n):
        _, done = yield nap(i, seconds)
        total += done
        if i == n // 2:
            yield durable.sleep(0.3)
    return total
