"""The webhook receiver's logic, without a web framework: ``(headers, raw body) -> (status, JSON)``.

GitHub signs every delivery with the webhook secret (``X-Hub-Signature-256:
sha256=<HMAC-SHA256 of the raw body>``); anything unsigned or signed with
another key is refused with 401 before the body is even parsed. A verified
``pull_request`` event then becomes one durable operation:

- ``opened``: start the PR's workflow, with the PR as the workflow id. GitHub
  redelivers webhooks (and people press "Redeliver"), so starting an id that
  exists must start nothing: durable's ``Client.start`` guarantees that, and
  ``if_exists="error"`` lets the answer say which case it was.
- ``closed`` (closed or merged): the ``closed`` signal to that workflow. A
  workflow that has already ended, or never started, is not an error for
  GitHub to retry: the answer is 200 with a note.

Keeping this framework-free lets the Flask app (``app.py``) be a thin wrapper
and ``durable demo`` serve the same code with the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import redis

import durable

from .model import InvalidEvent, PullRequest
from .workflow import CLOSED, monitor_pr

__all__ = ["WebhookReceiver", "Response", "sign", "SIGNATURE_HEADER"]

SIGNATURE_HEADER = "X-Hub-Signature-256"
Response = tuple[int, dict[str, Any]]


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` signed with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _refuse(status: int, message: str) -> Response:
    return status, {"ok": False, "error": message}


class WebhookReceiver:
    """Verifies GitHub deliveries and turns ``pull_request`` events into workflow starts and signals.

    Args:
        client: where the workflows live.
        secret: the webhook's secret, as configured on GitHub.
        day_seconds: how long a "day" between reminders lasts for workflows started here.
    """

    def __init__(self, client: durable.Client, secret: bytes | str, day_seconds: float = 24 * 3600.0) -> None:
        secret = secret.encode() if isinstance(secret, str) else secret
        if not secret:
            raise ValueError("the webhook secret is empty: set the same non-empty secret here and on GitHub")
        if not (isinstance(day_seconds, (int, float)) and day_seconds > 0):
            raise ValueError(f"day_seconds must be a positive number, not {day_seconds!r}")
        self.client = client
        self._secret = secret
        self.day_seconds = float(day_seconds)

    def __call__(self, headers: Mapping[str, str], body: bytes) -> Response:
        """Handle one delivery: ``headers`` as received (any case), ``body`` the raw bytes."""
        lower = {key.lower(): value for key, value in headers.items()}
        problem = self._check_signature(lower.get(SIGNATURE_HEADER.lower()), body)
        if problem:
            return _refuse(401, problem)
        event = lower.get("x-github-event", "")
        if not event:
            return _refuse(400, "no X-GitHub-Event header: this does not look like a GitHub webhook delivery")
        if event == "ping":
            return 200, {"ok": True, "note": "pong: deliveries arrive and the secret matches"}
        if event != "pull_request":
            return 202, {"ok": True, "note": f"ignored: the PR monitor handles pull_request events, not {event!r}"}
        try:
            payload = _payload(lower.get("content-type", ""), body)
            pr = PullRequest.from_event(payload)
        except InvalidEvent as exc:
            return _refuse(400, str(exc))
        action = payload.get("action")
        try:
            if action == "opened":
                return self._opened(pr)
            if action == "closed":
                return self._closed(pr, payload)
        except redis.RedisError as exc:  # GitHub shows the failed delivery; redeliver once Redis is back
            return _refuse(503, f"the workflow store is unreachable ({exc}); redeliver this webhook later")
        return 202, {"ok": True, "note": f"ignored: nothing to do for a pull request {action!r}"}

    def _check_signature(self, header: str | None, body: bytes) -> str | None:
        if not header:
            return (f"missing {SIGNATURE_HEADER} header: set a secret on the GitHub webhook "
                    "(the same as GITHUB_WEBHOOK_SECRET here)")
        if not header.startswith("sha256="):
            return f"malformed {SIGNATURE_HEADER} header: expected 'sha256=<hex digest>'"
        if not hmac.compare_digest(header.encode(), sign(self._secret, body).encode()):
            return (f"{SIGNATURE_HEADER} does not match the body: the webhook's secret differs from "
                    "GITHUB_WEBHOOK_SECRET, or the body was altered")
        return None

    def _opened(self, pr: PullRequest) -> Response:
        try:
            self.client.start(monitor_pr, pr, self.day_seconds, workflow_id=pr.workflow_id, if_exists="error")
        except durable.WorkflowAlreadyExists:
            return 200, {"ok": True, "workflow_id": pr.workflow_id, "started": False,
                         "note": "already monitored: a redelivered webhook starts nothing"}
        return 202, {"ok": True, "workflow_id": pr.workflow_id, "started": True}

    def _closed(self, pr: PullRequest, payload: Mapping[str, Any]) -> Response:
        pull = payload["pull_request"]
        merged = bool(pull.get("merged"))
        by = (pull.get("merged_by") or {}).get("login") if merged else (payload.get("sender") or {}).get("login")
        try:
            self.client.signal(pr.workflow_id, CLOSED, {"merged": merged, "by": by})
        except durable.WorkflowNotFound as exc:
            return 200, {"ok": True, "workflow_id": pr.workflow_id, "signalled": False,
                         "note": f"nothing to tell: {exc}"}
        return 202, {"ok": True, "workflow_id": pr.workflow_id, "signalled": True, "merged": merged}


def _payload(content_type: str, body: bytes) -> dict[str, Any]:
    """The event's JSON, whichever content type the webhook was configured with."""
    if content_type.split(";")[0].strip() == "application/x-www-form-urlencoded":
        fields = urllib.parse.parse_qs(body.decode(errors="replace"))
        if "payload" not in fields:
            raise InvalidEvent("a form-encoded delivery must carry the event in a 'payload' field")
        text = fields["payload"][0]
    else:
        text = body.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"the body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidEvent("the body is JSON but not an object")
    return data
