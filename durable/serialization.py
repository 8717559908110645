"""Turning values into stored bytes and back: pickling, signing, size limits.

Everything durable stores (arguments, results, errors, history events) goes
through ``dumps``/``loads``, so the format, the limits and the errors are
decided here. cloudpickle rather than pickle, because workflow arguments and
results are often lambdas, dataclasses from ``__main__`` or closures.

Unpickling runs code, so anyone who can write to Redis could make a worker run
theirs through a crafted payload. With ``DURABLE_SECRET`` set (one or more
comma-separated keys: the first signs, any verifies, which allows rotation),
every payload is stored as ``MAGIC + HMAC-SHA256(key, pickle) + pickle`` and
is verified before it is unpickled; a payload that fails, or an unsigned one
while a secret is set, raises ``SignatureError`` and is never unpickled.

``DURABLE_MAX_PAYLOAD`` (bytes, default 2 MiB, 0 for no limit) caps each
payload: Redis, and every replay, pay for big values; store them elsewhere and
pass a reference.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
from collections.abc import Sequence
from typing import Any

import cloudpickle

from .errors import PayloadTooLarge, SerializationError, SignatureError
from .events import Event, from_dict, to_dict
from .packed import Part, decode_block, encode_block, from_dicts

__all__ = ["dumps", "loads", "encode_event", "encode_events", "decode_event", "decode_events", "decode_entries",
           "pack_events", "unpack_blocks", "SECRET_ENV", "MAX_PAYLOAD_ENV", "PACK_FORMAT"]

SECRET_ENV = "DURABLE_SECRET"
MAX_PAYLOAD_ENV = "DURABLE_MAX_PAYLOAD"
DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024

_MAGIC = b"\x00DSG1"  # a pickle never starts with a NUL byte, so the two cannot be confused
_MAC_SIZE = hashlib.sha256().digest_size


_parsed: tuple[str, list[bytes]] = ("", [])


def _keys() -> list[bytes]:
    global _parsed
    raw = os.environ.get(SECRET_ENV, "")
    if raw != _parsed[0]:
        _parsed = (raw, [part.strip().encode() for part in raw.split(",") if part.strip()])
    return _parsed[1]


def _limit() -> int:
    raw = os.environ.get(MAX_PAYLOAD_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_PAYLOAD
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${MAX_PAYLOAD_ENV} must be a number of bytes (0 for no limit), not {raw!r}") from None


def dumps(value: Any, what: str) -> bytes:
    """Pickle (and sign) ``value``; ``what`` names it in errors ("the arguments of workflow X")."""
    try:
        data = _pickle(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what}: {type(exc).__name__}: {exc}. Values that durable stores must be "
            "picklable: pass plain data (ids, dicts, dataclasses) instead of connections, locks or open files"
        ) from exc
    limit = _limit()
    if limit and len(data) > limit:
        raise PayloadTooLarge(
            f"{what} is {len(data)} bytes pickled, over the limit of {limit} (${MAX_PAYLOAD_ENV}); store large "
            "data elsewhere (a database, object storage) and pass a reference, or raise the limit"
        )
    return _sign(data)


_PROTOCOL = cloudpickle.DEFAULT_PROTOCOL


def _pickle(value: Any) -> bytes:
    """cloudpickle's bytes, at pickle's speed where they are the same.

    Plain ``pickle`` is two to three times faster, and every commit pickles its
    events. It differs from cloudpickle only where cloudpickle pickles by value
    what pickle pickles by reference: lambdas, local and dynamic classes (pickle
    refuses those) and what lives in ``__main__`` (pickle names it, which another
    process could not load). So: pickle, and cloudpickle when pickle refuses, the
    result names ``__main__``, or modules are registered to pickle by value."""
    if not _BY_VALUE:
        try:
            data = pickle.dumps(value, _PROTOCOL)
        except Exception:
            pass
        else:
            if b"__main__" not in data:
                return data
    return cloudpickle.dumps(value)


_BY_VALUE = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", {"unknown"})


def _sign(data: bytes, keys: list[bytes] | None = None) -> bytes:
    """``data`` signed with the first secret (``keys``: the secrets, when the caller read them)."""
    keys = _keys() if keys is None else keys
    if keys:
        data = _MAGIC + hmac.new(keys[0], data, hashlib.sha256).digest() + data
    return data


def loads(data: bytes, what: str) -> Any:
    """Verify (when signing is on) and unpickle bytes written by ``dumps``."""
    keys = _keys()
    if data.startswith(_MAGIC):
        if not keys:
            raise SignatureError(
                f"{what} is signed but ${SECRET_ENV} is not set in this process: set the same secret on "
                "every client and worker"
            )
        mac, body = data[len(_MAGIC):len(_MAGIC) + _MAC_SIZE], data[len(_MAGIC) + _MAC_SIZE:]
        if not any(hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()) for key in keys):
            raise SignatureError(
                f"{what} failed its signature check and was not unpickled: it was modified in Redis, or "
                f"signed with a secret that is not in ${SECRET_ENV}"
            )
        data = body
    elif keys:
        raise SignatureError(
            f"{what} is not signed but ${SECRET_ENV} is set, so it was not unpickled: it was written "
            "without the secret (before signing was turned on?) or by someone without it"
        )
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"cannot deserialize {what}: {type(exc).__name__}: {exc}. Is a class it refers to missing "
            "from this worker's code?"
        ) from exc


def encode_event(event: Event) -> bytes:
    return dumps(to_dict(event), f"the {event.type} event at sequence {event.seq}")


def encode_events(events: Sequence[Event]) -> list[bytes]:
    """``encode_event`` of each, reading the limit and the secret once (a commit's events)."""
    limit, keys = _limit(), _keys()
    out: list[bytes] = []
    for event in events:
        try:
            data = _pickle(to_dict(event))
        except Exception:
            data = b""
        if not data or (limit and len(data) > limit):
            out.append(encode_event(event))  # raises the error that says which and why
        else:
            out.append(_sign(data, keys))
    return out


def decode_event(data: bytes) -> Event:
    return from_dict(loads(data, "a history event"))


def decode_events(items: list[bytes]) -> list[Event]:
    """Decode a run of history entries; the unsigned fast path skips per-entry checks."""
    if _keys() or any(item.startswith(_MAGIC) for item in items):
        return [decode_event(item) for item in items]
    try:
        return [from_dict(cloudpickle.loads(item)) for item in items]
    except Exception:
        return [decode_event(item) for item in items]  # for the precise error


def decode_entries(items: list[bytes], first: int) -> list[Part]:
    """``decode_events`` of entries from history position ``first``, as the parts of a
    ``History``: runs of completed activities are kept as their dicts (``packed.from_dicts``)."""
    if _keys() or any(item.startswith(_MAGIC) for item in items):
        dicts = [loads(item, "a history event") for item in items]
    else:
        try:
            dicts = [pickle.loads(item) for item in items]
        except Exception:
            dicts = []
    if len(dicts) != len(items) or not all(type(data) is dict for data in dicts):
        return [decode_events(items)]  # raises the precise error
    return from_dicts(dicts, first)


PACK_FORMAT = 2  # bump when the packed form changes: old packs are then ignored and rebuilt


def pack_events(run_id: str, first: int, events: Sequence[Event]) -> bytes:
    """One packed block of history: ``events`` (from position ``first`` of run ``run_id``)
    as a single pickle, signed like any entry.

    Runs of completed activities are stored as columns (``packed.encode_block``), so
    that a cold load builds no object per event for them; other events as their dicts.
    A pack is only ever a copy of entries that stay in the history list, so it can be
    dropped at any time.
    """
    return _sign(_pickle((PACK_FORMAT, run_id, first, encode_block(events, _pickle))))


def unpack_blocks(blocks: Sequence[bytes], run_id: str, size: int, first: int = 0) -> list[Part] | None:
    """The parts of consecutive blocks written by ``pack_events``, of ``size`` events each
    from history position ``first`` of run ``run_id``; None if any is not that block in
    this format (the caller then reads the history list itself). A cold load reads them
    all at once: the secret is looked up once, not per block."""
    plain = not _keys()
    parts: list[Part] = []
    for number, data in enumerate(blocks):
        position = first + number * size
        try:
            if plain and not data.startswith(_MAGIC):
                fmt, packed_run, packed_first, raw = pickle.loads(data)
            else:
                fmt, packed_run, packed_first, raw = loads(data, "a packed history block")
        except SignatureError:
            raise
        except Exception:
            return None
        if fmt != PACK_FORMAT or packed_run != run_id or packed_first != position:
            return None
        try:
            decoded, count = decode_block(raw, position)
        except Exception:
            return None
        if count != size:
            return None
        parts += decoded
    return parts
