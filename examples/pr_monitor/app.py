"""The webhook receiver as a Flask app: a thin wrapper around ``webhook.WebhookReceiver``.

Run it with ``flask --app pr_monitor.app run`` (from ``examples/``, Flask from
``pip install 'durable[examples]'``); it reads ``GITHUB_WEBHOOK_SECRET``,
``PR_MONITOR_DAY_SECONDS`` and ``DURABLE_REDIS_URL`` (see ``config``). Point the
GitHub webhook (content type ``application/json``, "Pull requests" events) at
``https://<host>/webhook``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

import durable

from . import config
from .webhook import WebhookReceiver

__all__ = ["create_app"]

MAX_BODY = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB


def create_app(receiver: WebhookReceiver | None = None) -> Flask:
    """The app; by default its receiver is configured from the environment."""
    if receiver is None:
        receiver = WebhookReceiver(durable.Client(), config.webhook_secret(), config.day_seconds())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        # The raw bytes: the signature covers the body exactly as GitHub sent it.
        status, body = receiver(dict(request.headers.items()), request.get_data(cache=False))
        return jsonify(body), status

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"ok": True}), 200

    return app
