"""RQ settings for durable workers, read from the environment.

    rq worker -c workers.settings -w durable.Worker --with-scheduler

RQ reads the upper-case names of this module: ``REDIS_URL`` (the connection),
``QUEUES`` (served when no queue is named on the command line) and
``DICT_CONFIG`` (handed to ``logging.config.dictConfig``). ``workers/durable-worker``
runs this module first for both of its forms, so a bad value stops the worker
before it starts, with one line naming the variable, whichever form is used.

The durable variables that durable itself reads (``DURABLE_LEASE_TTL``,
``DURABLE_CACHE_SIZE``, ``DURABLE_MAX_PAYLOAD``, ``DURABLE_KEEP_RUNS``,
``DURABLE_SECRET``) are checked here with the conversions durable applies to
them, because durable reads some of them only mid-job (a bad
``DURABLE_KEEP_RUNS`` would otherwise fail the first ``continue_as_new``).

Deliberately no ``NAME``: RQ refuses to start a worker whose name is still
registered, which after a SIGKILL it stays for minutes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from redis.connection import parse_url

DEFAULT_QUEUE = "durable"  # durable.client.DEFAULT_QUEUE (pinned by tests/test_workers_templates.py)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"  # the same as `durable worker`'s

# Names that stay one word on a command line and in a Redis key.
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]+")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


@dataclass(frozen=True)
class Settings:
    redis_url: str
    queues: list[str]
    log_level: str
    imports: list[str]


def load(environ: Mapping[str, str]) -> Settings:
    """Check every variable a worker reads; ``ValueError`` names the first bad one and says what to write."""
    url = environ.get("DURABLE_REDIS_URL", "").strip()
    if not url:
        raise ValueError(
            "DURABLE_REDIS_URL is not set: point every worker at the Redis that holds the workflows, "
            "e.g. redis://redis.internal:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock)"
        )
    try:
        parse_url(url)  # what redis.Redis.from_url will do with it
    except ValueError as exc:  # the message never contains the URL, which may hold a password
        raise ValueError(f"DURABLE_REDIS_URL is not a Redis URL: {exc}") from None
    rq_url = environ.get("RQ_REDIS_URL", "").strip()
    if rq_url and rq_url != url:
        raise ValueError(
            "RQ_REDIS_URL is set and differs from DURABLE_REDIS_URL; `rq worker` would connect to "
            "RQ_REDIS_URL and ignore this module's REDIS_URL: unset RQ_REDIS_URL"
        )

    queues = _names(environ, "DURABLE_QUEUES", DEFAULT_QUEUE, _QUEUE, "queue names of letters, digits and _.:-")
    imports = _names(environ, "DURABLE_IMPORTS", "", _MODULE, "dotted module names such as myapp.workflows")

    level = environ.get("DURABLE_LOG_LEVEL", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"DURABLE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")

    # Read by durable itself, with float() and int() (durable/worker.py, cache.py, serialization.py,
    # runtime.py): accept what those accept, reject what they would crash on or misread.
    _number(environ, "DURABLE_LEASE_TTL", float, "a number of seconds above 0", lambda v: math.isfinite(v) and v > 0)
    _number(environ, "DURABLE_STOP_TIMEOUT", float, "a number of seconds >= 0",
            lambda v: math.isfinite(v) and v >= 0)
    _number(environ, "DURABLE_CACHE_SIZE", int, "a whole number >= 0 (0 turns the cache off)", lambda v: v >= 0)
    _number(environ, "DURABLE_KEEP_RUNS", int, "a whole number >= 0 of earlier runs to keep", lambda v: v >= 0)
    if environ.get("DURABLE_MAX_PAYLOAD", "") != "":  # durable reads an empty one as the default
        _number(environ, "DURABLE_MAX_PAYLOAD", int, "a number of bytes >= 0 (0: no limit)", lambda v: v >= 0)
    secret = environ.get("DURABLE_SECRET", "")
    if secret.strip() and not any(part.strip() for part in secret.split(",")):
        raise ValueError(
            "DURABLE_SECRET holds no key (only commas and spaces), so nothing would be signed: "
            "set key[,old keys] or leave it empty"
        )
    return Settings(redis_url=url, queues=queues, log_level=level, imports=imports)


def _names(environ: Mapping[str, str], var: str, default: str, pattern: re.Pattern[str], what: str) -> list[str]:
    raw = environ.get(var, default)
    if not raw.strip():
        if default:
            raise ValueError(f"{var} is empty: list one or more {what}, comma-separated, or remove it")
        return []
    names = [part.strip() for part in raw.split(",")]
    for name in names:
        if not name:
            raise ValueError(f"{var}={raw!r} has an empty entry: list {what}, comma-separated")
        if not pattern.fullmatch(name):
            raise ValueError(f"{var}: {name!r} is not valid; expected {what}, comma-separated")
    if len(set(names)) != len(names):
        raise ValueError(f"{var}={raw!r} names the same entry twice")
    return names


def _number(
    environ: Mapping[str, str], var: str, kind: Callable[[str], float], what: str, ok: Callable[[float], bool]
) -> None:
    if var not in environ:
        return
    raw = environ[var]
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{var} must be {what}, not {raw!r} (remove the line for the default)") from None
    if not ok(value):
        raise ValueError(f"{var} must be {what}, not {raw!r}")


try:
    _settings = load(os.environ)
except ValueError as exc:
    # One line and a non-zero exit, not a traceback: `rq worker -c` imports this module outside its error handling.
    raise SystemExit(f"workers.settings: {exc}") from None

REDIS_URL = _settings.redis_url
QUEUES = _settings.queues
LOG_LEVEL = _settings.log_level
DICT_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"durable": {"format": LOG_FORMAT}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "durable", "stream": "ext://sys.stderr"}},
    "root": {"level": LOG_LEVEL, "handlers": ["stderr"]},
    # rq sets rq.worker to INFO when it is imported, before this is applied: name its loggers.
    "loggers": {name: {"level": LOG_LEVEL} for name in ("rq", "rq.worker", "rq.job", "rq.scheduler", "durable")},
}
