"""The kernel's one source of wall-clock time.

Every deadline durable computes (timers, retries, leases, "now" recorded for a
workflow) reads ``clock.now()``, so ``durable.testing`` can swap in a fake
clock and skip a 30-day sleep in a millisecond.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["now", "use"]

_source: Callable[[], float] = time.time


def now() -> float:
    """Seconds since the epoch, from the current source."""
    return _source()


def use(source: Callable[[], float] | None) -> Callable[[], float]:
    """Make ``source`` the clock (``None``: the real one); returns the previous source."""
    global _source
    previous = _source
    _source = source or time.time
    return previous
