"""Short, readable text for the operator's commands: cut reprs, spans, times, tables.

``durable history``, ``inspect`` and ``list`` print payloads they know nothing
about (an activity's result may be a megabyte, a local variable's ``repr`` may
raise). Everything shown goes through ``short``, so one odd value can neither
flood the terminal nor abort the listing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

__all__ = ["short", "call_text", "span", "when", "table"]


def short(value: Any, width: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``width`` characters (an ellipsis marks the cut)."""
    try:
        text = repr(value)
    except Exception as exc:  # a user's __repr__ may fail; the listing must not
        text = f"<{type(value).__name__}: repr() raised {type(exc).__name__}>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def call_text(name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, width: int = 60) -> str:
    """``name(arg, key=value)`` with each argument cut short, the whole cut to ``width``."""
    parts = [short(a, 24) for a in args] + [f"{k}={short(v, 24)}" for k, v in (kwargs or {}).items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= width else text[: width - 2] + "…)"


def span(seconds: float) -> str:
    """A duration as a person reads it: ``340ms``, ``12.3s``, ``4m05s``, ``3h02m``, ``2d03h``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def when(timestamp: float | None, *, precise: bool = False) -> str:
    """A unix time as local ISO date and time (to the millisecond with ``precise``); ``-`` for none."""
    if not timestamp:
        return "-"
    moment = dt.datetime.fromtimestamp(timestamp)
    return moment.isoformat(sep=" ", timespec="milliseconds" if precise else "seconds")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns as wide as their widest cell; the last column is not padded."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return [line(headers), *(line(row) for row in rows)]
