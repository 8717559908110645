"""A stdlib HTTP server in a background thread, for the webhook receiver and the stand-in APIs.

``durable demo`` must run with nothing but durable installed, so it serves the
webhook receiver (and the stand-in Slack/GitHub) with ``http.server``: a
threading server on a free port of 127.0.0.1, quiet, and stopped for sure
when the ``with`` block ends. A client that hangs up mid-answer (a worker
SIGKILLed during its call, which the demo does on purpose) is not an error.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .webhook import WebhookReceiver

__all__ = ["BackgroundServer", "JsonHandler", "serve_receiver"]

MAX_BODY = 25 * 1024 * 1024

_HANGUPS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], _HANGUPS):
            super().handle_error(request, client_address)


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler base: reads the raw body, answers JSON, logs nothing."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"Content-Length must be between 0 and {MAX_BODY}")
        return self.rfile.read(length)

    def send_json(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except _HANGUPS:
            pass  # the caller is gone (killed): nobody to answer


class BackgroundServer:
    """``handler`` served on ``127.0.0.1:<free port>`` by a daemon thread until ``close()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str = "http") -> None:
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{name}-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def serve_receiver(receiver: WebhookReceiver) -> BackgroundServer:
    """Serve ``receiver`` at ``<url>/webhook`` (POST), as the Flask app does."""

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/webhook":
                self.send_json(404, {"ok": False, "error": "POST webhooks to /webhook"})
                return
            try:
                body = self.read_body()
            except ValueError as exc:
                self.send_json(413, {"ok": False, "error": str(exc)})
                return
            try:
                status, answer = receiver(dict(self.headers.items()), body)
            except Exception as exc:  # answered, not swallowed: GitHub shows it on the delivery
                status, answer = 500, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.send_json(status, answer)

    return BackgroundServer(Handler, "webhook")
