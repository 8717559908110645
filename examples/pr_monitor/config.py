"""Configuration from environment variables, read when needed.

Activities run in worker processes and the webhook receiver in a web process;
each reads only what it uses, at the moment it uses it, so a worker needs no
webhook secret and the receiver needs no Slack token. A missing or malformed
value is a ``ConfigError`` that names the variable to set.

=========================  =========================================================
variable                   meaning
=========================  =========================================================
``SLACK_API_URL``          Slack Web API base (default ``https://slack.com/api``)
``SLACK_BOT_TOKEN``        bot token, ``xoxb-...``, scopes ``channels:manage``,
                           ``channels:read``, ``chat:write`` (workers)
``GITHUB_API_URL``         GitHub REST API base (default ``https://api.github.com``)
``GITHUB_TOKEN``           token that can read pull requests and write issue
                           comments on the watched repositories (workers)
``GITHUB_WEBHOOK_SECRET``  the secret set on the GitHub webhook (receiver)
``PR_MONITOR_DAY_SECONDS`` seconds between reminders (default 86400, one day)
``PR_MONITOR_HTTP_TIMEOUT`` seconds before an API call gives up (default 15)
=========================  =========================================================
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["ConfigError", "ApiSettings", "slack", "github", "webhook_secret", "day_seconds", "http_timeout"]

SLACK_DEFAULT = "https://slack.com/api"
GITHUB_DEFAULT = "https://api.github.com"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; retrying will not help."""


@dataclass(frozen=True)
class ApiSettings:
    """Where one API lives and how to authenticate to it."""

    base_url: str
    token: str


def _url(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip() or default
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


def _required(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: set it to {what}")
    return value


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"{name} must be a positive, finite number of seconds, not {raw!r}")
    return value


def slack() -> ApiSettings:
    """The Slack Web API: ``SLACK_API_URL`` and ``SLACK_BOT_TOKEN``."""
    return ApiSettings(_url("SLACK_API_URL", SLACK_DEFAULT),
                       _required("SLACK_BOT_TOKEN", "a Slack bot token (xoxb-...)"))


def github() -> ApiSettings:
    """The GitHub REST API: ``GITHUB_API_URL`` and ``GITHUB_TOKEN``."""
    return ApiSettings(_url("GITHUB_API_URL", GITHUB_DEFAULT),
                       _required("GITHUB_TOKEN", "a GitHub token that can read pull requests and comment"))


def webhook_secret() -> bytes:
    """``GITHUB_WEBHOOK_SECRET``, the key GitHub signs every delivery with."""
    return _required("GITHUB_WEBHOOK_SECRET", "the secret configured on the GitHub webhook").encode()


def day_seconds() -> float:
    """``PR_MONITOR_DAY_SECONDS``: how long a "day" between reminders lasts."""
    return _seconds("PR_MONITOR_DAY_SECONDS", 24 * 3600.0)


def http_timeout() -> float:
    """``PR_MONITOR_HTTP_TIMEOUT``: seconds before one API call gives up."""
    return _seconds("PR_MONITOR_HTTP_TIMEOUT", 15.0)
