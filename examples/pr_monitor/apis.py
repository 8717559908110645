"""JSON over HTTP to Slack and GitHub, with ``urllib`` (no extra dependency).

Its one job besides the request is to sort failures into the two kinds the
workflow's retry policy tells apart: ``TransientApiError`` (the network, a
5xx, a rate limit: try again later, with the same idempotency key) and
``PermanentApiError`` (a bad token, an unknown channel: retrying cannot help,
so the activity fails at once with the API's own message).

Every call sends ``Idempotency-Key``: the stand-in (and APIs that honour the
header) answer a repeated key with the first answer instead of acting again.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from . import config

__all__ = ["TransientApiError", "PermanentApiError", "SlackError", "slack", "github", "USER_AGENT"]

# GitHub rejects requests without a User-Agent; the pid lets the stand-in say which worker called.
USER_AGENT = "durable-pr-monitor/0.1 (pid {pid})"
# Slack reports these in a 200 answer with ok=false; they pass, unlike the others.
_GITHUB_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_SLACK_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class TransientApiError(Exception):
    """The call may succeed later: a network error, a timeout, HTTP 408, 429 or 5xx."""


class PermanentApiError(Exception):
    """The call will fail again the same way (HTTP 4xx): fix the cause, do not retry."""


class SlackError(PermanentApiError):
    """Slack answered ``ok: false`` with ``error`` for ``method``."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(method, error)  # both in args: the exception pickles (RQ and durable store it)
        self.method = method
        self.error = error

    def __str__(self) -> str:
        return f"Slack {self.method} failed: {self.error} (see https://api.slack.com/methods/{self.method})"


def _request(method: str, url: str, *, token: str, idempotency_key: str, body: Any = None,
             headers: Mapping[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "Idempotency-Key": idempotency_key,
        "User-Agent": USER_AGENT.format(pid=os.getpid()),
        **(headers or {}),
    }
    if data is not None:
        headers["Content-Type"] = "application/json; charset=utf-8"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=config.http_timeout()) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _detail(exc.read())
        what = f"{method} {url} answered HTTP {exc.code}: {detail}"
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientApiError(what) from None
        raise PermanentApiError(what) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientApiError(f"{method} {url} did not answer: {reason}") from None
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise TransientApiError(f"{method} {url} answered something that is not JSON: {raw[:120]!r}") from None


def _detail(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace") or "(empty body)"
    if isinstance(data, Mapping):
        return str(data.get("message") or data.get("error") or data)
    return str(data)


def slack(method: str, *, idempotency_key: str, body: Mapping[str, Any] | None = None,
          params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Call Slack Web API ``method`` (``chat.postMessage``...): JSON ``body`` as a POST, or
    ``params`` as a GET; returns the answer when ``ok`` is true."""
    settings = config.slack()
    url = f"{settings.base_url}/{method}"
    if params is not None:
        url += "?" + urllib.parse.urlencode(params)
    answer = _request("GET" if body is None else "POST", url, token=settings.token,
                      idempotency_key=idempotency_key, body=body)
    if not isinstance(answer, dict):
        raise TransientApiError(f"Slack {method} answered {answer!r:.120} instead of a JSON object")
    if not answer.get("ok"):
        error = str(answer.get("error") or "unknown_error")
        if error in _SLACK_TRANSIENT:
            raise TransientApiError(f"Slack {method} failed: {error}")
        raise SlackError(method, error)
    return answer


def github(method: str, path: str, *, idempotency_key: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Call the GitHub REST API: ``github("GET", "/repos/o/r/pulls/1", ...)``; returns the JSON object."""
    settings = config.github()
    answer = _request(method, f"{settings.base_url}{path}", token=settings.token,
                      idempotency_key=idempotency_key, body=body, headers=_GITHUB_HEADERS)
    if not isinstance(answer, dict):
        raise TransientApiError(f"GitHub {method} {path} answered {answer!r:.120} instead of a JSON object")
    return answer
