"""A dedicated Redis connection for the one command every step ends with.

redis-py spends about 40 µs of CPU around each command on this kind of
machine before and after the round trip itself: taking a connection from the
pool (with a ``poll`` to check it has no stray data), the retry wrapper, its
observability hooks, per-argument type checks while packing, and giving the
connection back. A raw round trip is 35 µs. An inline activity step has one
command of its own (the commit script) and a budget of 250 µs, so the step's
commit goes over a connection of its own instead: one per store and thread,
made by the client's own pool (so TLS, ACLs, unix sockets and Sentinel work as
for any other command), packed here (every argument is already bytes, str or a
number) and read with the connection's own parser.

Errors keep redis-py's meaning: a reply error raises ``ResponseError`` (a
missing script is loaded and the call made again), and a broken connection is
dropped, reconnected and the command sent once more, as redis-py's default
retry does, then ``ConnectionError`` is raised. Sending a commit twice is
harmless: the compare-and-append writes at most once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.exceptions import NoScriptError

__all__ = ["Line", "pack"]


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP, the way redis-py encodes its arguments (str as UTF-8,
    numbers by ``repr``), without its per-argument checks."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int or kind is float:
            data = repr(arg).encode()
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            data = bytes(arg)
        elif isinstance(arg, (str, int, float)) and not isinstance(arg, bool):
            data = (arg if isinstance(arg, str) else repr(arg)).encode()
        else:
            raise redis.DataError(f"invalid input of type {kind.__name__!r} for a Redis command")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class Line:
    """Connections of ``client``'s pool, one per thread that calls, kept open between calls."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()

    def call(self, *args: Any) -> Any:
        """Any one command (the benchmarks' floor: what a write costs over this connection)."""
        return self._call(pack(args))

    def batch(self, *commands: Sequence[Any]) -> list[Any]:
        """Several commands in one round trip (not a transaction), for writes that are safe to
        send twice; a reply error is raised after every reply is read."""
        replies = self._call(b"".join(pack(command) for command in commands), len(commands))
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return cast(list[Any], replies)

    def script(self, sha: str, source: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``EVALSHA`` (``EVAL``'s script loaded first if the server lacks it)."""
        command = pack(["EVALSHA", sha, len(keys), *keys, *args])
        try:
            return self._call(command)
        except NoScriptError:
            self._call(pack(["SCRIPT", "LOAD", source]))
            return self._call(command)

    def _call(self, command: bytes, replies: int = 0) -> Any:
        """Send ``command`` and read its reply (or a list of ``replies`` replies, errors
        included, for a batch)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # (a forked child must not share the socket)
            conn = self._local.conn = self._pool.make_connection()
            self._local.pid = os.getpid()
        for last in (False, True):
            try:
                conn.connect()  # a no-op when connected; a Sentinel-managed one asks for the primary here
                conn.send_packed_command([command], check_health=False)
                if not replies:
                    return conn.read_response()
                out = []
                for _ in range(replies):
                    try:
                        out.append(conn.read_response())
                    except redis.ResponseError as exc:
                        out.append(exc)
                return out
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                conn.disconnect()
                if last:
                    if isinstance(exc, redis.RedisError):
                        raise
                    raise redis.ConnectionError(f"Redis connection lost: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
            self._local.conn = None
