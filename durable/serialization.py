"""Turning values into stored bytes and back.

Everything durable stores (arguments, results, history events) goes through
``dumps``/``loads`` so that the format, and the errors, are decided in one
place. cloudpickle rather than pickle, because workflow arguments and results
are often lambdas, dataclasses from ``__main__`` or closures.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from .errors import SerializationError
from .events import Event, from_dict, to_dict

__all__ = ["dumps", "loads", "encode_event", "decode_event"]


def dumps(value: Any, what: str) -> bytes:
    """Pickle ``value``; ``what`` names it in the error ("the arguments of workflow X")."""
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what}: {type(exc).__name__}: {exc}. Values that durable stores must be "
            "picklable: pass plain data (ids, dicts, dataclasses) instead of connections, locks or open files"
        ) from exc


def loads(data: bytes, what: str) -> Any:
    """Unpickle bytes written by ``dumps``."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"cannot deserialize {what}: {type(exc).__name__}: {exc}. Is a class it refers to missing "
            "from this worker's code?"
        ) from exc


def encode_event(event: Event) -> bytes:
    return dumps(to_dict(event), f"the {event.type} event at sequence {event.seq}")


def decode_event(data: bytes) -> Event:
    return from_dict(loads(data, "a history event"))
