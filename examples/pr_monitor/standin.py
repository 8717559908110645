"""A local stand-in for the Slack Web API and the GitHub REST API, that records every call.

The demo and the tests run the PR monitor's real activities, over real HTTP,
against this server instead of Slack and GitHub. It does three things real
services do, or should, and one they cannot:

- answers like them (``fakeapis``), at ``<url>/slack/api/<method>`` and
  ``<url>/github/...``, with bearer-token checks;
- dedupes by ``Idempotency-Key``: a POST whose key succeeded before is not
  applied again, it gets the first answer back (as Stripe-style APIs do);
- RECORDS every call (endpoint, idempotency key, whether it was such a
  duplicate, the calling process's pid), so a run can show that nothing was
  sent twice even though a worker was killed mid-call;
- injects faults after applying a call: ``hold`` keeps the answer back (the
  demo SIGKILLs the worker waiting for it) and ``fail_after_apply`` answers
  502, the two ways a caller loses the answer to a request that took effect.

It runs in a thread of one process (the demo's, a test's); worker processes
reach it through its URL (``env()`` gives their environment), and other
processes can read the records at ``GET <url>/_standin/calls``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from .fakeapis import Answer, FakeGitHub, FakeSlack
from .serving import BackgroundServer, JsonHandler
from .webhook import sign

__all__ = ["Standin", "Call", "pull_request_event", "deliver"]

_CALLER = re.compile(r"\(pid (\d+)\)")


@dataclass
class Call:
    """One request the stand-in received."""

    time: float
    api: str  # "slack" or "github"
    method: str  # HTTP method
    path: str  # as requested, without the query string
    endpoint: str  # "chat.postMessage", "pulls.get", ...
    key: str | None  # the Idempotency-Key header
    duplicate: bool  # the key had succeeded before: answered from memory, not applied again
    status: int
    ok: bool  # the API reported success
    caller: int | None  # the pid in the User-Agent
    detail: str  # what it was about (a message's text, a channel's name)
    fault: str = ""  # what the stand-in did to the answer after applying it

    @property
    def applied(self) -> bool:
        """It changed something: a successful POST that was not a duplicate."""
        return self.method == "POST" and self.ok and not self.duplicate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Fault:
    endpoint: str
    contains: str
    kind: str  # "hold" or "fail"
    seconds: float = 0.0
    status: int = 502
    times: int = 1

    def matches(self, call: Call) -> bool:
        return self.times > 0 and call.endpoint == self.endpoint and self.contains in call.detail


class Standin:
    """The stand-in server; use as a context manager, or ``close()`` it."""

    SLACK_TOKEN = "xoxb-standin"
    GITHUB_TOKEN = "ghp_standin"

    def __init__(self) -> None:
        self.slack = FakeSlack()
        self.github = FakeGitHub()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._answers: dict[str, tuple[str, Answer]] = {}  # idempotency key -> (path, first answer)
        self._faults: list[_Fault] = []
        self._held: Call | None = None
        self._release = threading.Event()
        self._server = BackgroundServer(_handler(self), "standin")
        self.url = self._server.url

    # -- for the demo and the tests ------------------------------------------------
    @property
    def slack_url(self) -> str:
        return f"{self.url}/slack/api"

    @property
    def github_url(self) -> str:
        return f"{self.url}/github"

    def env(self) -> dict[str, str]:
        """Environment variables that point the activities (in any process) here."""
        return {"SLACK_API_URL": self.slack_url, "SLACK_BOT_TOKEN": self.SLACK_TOKEN,
                "GITHUB_API_URL": self.github_url, "GITHUB_TOKEN": self.GITHUB_TOKEN}

    def open_pull(self, owner: str, repo: str, number: int, title: str = "", author: str = "") -> dict[str, Any]:
        """A new open pull request on the fake GitHub; returns it as the API shows it."""
        return self.github.set_pull(owner, repo, number, title=title, user={"login": author}, state="open",
                                    merged=False, merged_by=None)

    def close_pull(self, owner: str, repo: str, number: int, merged: bool = False,
                   by: str | None = None) -> dict[str, Any]:
        """Close (or merge) it; returns it as the API shows it."""
        return self.github.set_pull(owner, repo, number, state="closed", merged=merged,
                                    merged_by={"login": by} if merged and by else None)

    def calls(self) -> list[Call]:
        """Every call so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def hold(self, endpoint: str, contains: str = "", seconds: float = 60.0) -> None:
        """Apply the next matching call, then keep its answer back up to ``seconds`` (or ``release()``)."""
        with self._lock:
            self._release.clear()
            self._faults.append(_Fault(endpoint, contains, "hold", seconds=seconds))

    def fail_after_apply(self, endpoint: str, contains: str = "", status: int = 502, times: int = 1) -> None:
        """Apply the next ``times`` matching calls, then answer them with HTTP ``status``."""
        with self._lock:
            self._faults.append(_Fault(endpoint, contains, "fail", status=status, times=times))

    def held(self) -> Call | None:
        """The call whose answer is being kept back, if any."""
        with self._lock:
            return self._held

    def release(self) -> None:
        """Let every held answer go (to a caller that may be long gone)."""
        self._release.set()

    def wait_for(self, predicate: Callable[[Call], bool], timeout: float, what: str) -> Call:
        """The first recorded call that satisfies ``predicate``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls():
                if predicate(call):
                    return call
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stand-in received no {what} within {timeout:g} s")
            time.sleep(0.02)

    def close(self) -> None:
        self.release()
        self._server.close()

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- serving ---------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        """One request: route it, dedupe it, apply it, record it, maybe fault it."""
        headers = {name.lower(): value for name, value in headers.items()}  # urllib sends "Idempotency-key"
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        if path.startswith("/_standin/"):
            return self._admin(method, path, body)
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(parts.query))
        try:
            args.update(_parse_body(headers.get("content-type", ""), body))
        except ValueError as exc:
            return 400, {"message": f"the stand-in could not parse the body: {exc}"}
        if path.startswith("/slack/api/"):
            api, endpoint = "slack", path.removeprefix("/slack/api/")
            run: Callable[[], tuple[str, Answer]] = lambda: (endpoint, self.slack.call(endpoint, args))
        elif path.startswith("/github/"):
            api, endpoint = "github", f"{method} {path}"
            run = lambda: self.github.call(method, path.removeprefix("/github"), args)
        else:
            return 404, {"message": f"the stand-in serves /slack/api/... and /github/..., not {path}"}
        key = headers.get("idempotency-key") or None
        caller = _CALLER.search(headers.get("user-agent", ""))
        call = Call(time.time(), api, method, path, endpoint, key, False, 0, False,
                    int(caller[1]) if caller else None, "")
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            if not token:
                status, answer, call.detail = ((200, {"ok": False, "error": "not_authed"}, "no token") if api == "slack"
                                               else (401, {"message": "Requires authentication"}, "no token"))
            elif method == "POST" and key and key in self._answers:
                first_path, (status, answer, call.detail) = self._answers[key]
                call.duplicate = True
                if first_path != path:
                    status, answer = 422, {"message": f"Idempotency-Key {key!r} was used for {first_path} before"}
            else:
                call.endpoint, (status, answer, call.detail) = run()
                if method == "POST" and key and _success(api, status, answer):
                    self._answers[key] = (path, (status, answer, call.detail))
            call.status, call.ok = status, _success(api, status, answer)
            self._calls.append(call)
            fault = next((f for f in self._faults if f.matches(call)), None)
            if fault is not None:
                fault.times -= 1
                if fault.kind == "hold":
                    call.fault, self._held = f"answer held back (up to {fault.seconds:g} s)", call
                else:
                    call.fault = f"answered HTTP {fault.status} after applying"
        if fault is not None and fault.kind == "hold":
            self._release.wait(fault.seconds)
        elif fault is not None:
            return fault.status, {"message": "the stand-in injected a failure after applying the request"}
        return status, answer

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/_standin/calls":
            return 200, {"calls": [call.as_dict() for call in self.calls()]}
        if method == "POST" and path == "/_standin/pulls":
            try:
                data = json.loads(body)
                pull = self.github.set_pull(str(data.pop("owner")), str(data.pop("repo")), int(data.pop("number")),
                                            **data)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return 400, {"message": f"POST /_standin/pulls takes a JSON object with owner, repo, number: {exc}"}
            return 200, pull
        return 404, {"message": "the stand-in's own endpoints: GET /_standin/calls, POST /_standin/pulls"}


def _success(api: str, status: int, answer: Any) -> bool:
    return 200 <= status < 300 and (api != "slack" or bool(isinstance(answer, dict) and answer.get("ok")))


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.split(";")[0].strip() == "application/x-www-form-urlencoded":
        return dict(urllib.parse.parse_qsl(body.decode()))
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _handler(standin: Standin) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def _serve(self) -> None:
            try:
                body = self.read_body()
            except ValueError as exc:
                self.send_json(413, {"message": str(exc)})
                return
            status, answer = standin.handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_json(status, answer)

        do_GET = do_POST = _serve

    return Handler


# -- playing GitHub's webhook side -----------------------------------------------------------


def pull_request_event(action: str, owner: str, repo: str, pull: Mapping[str, Any], sender: str) -> dict[str, Any]:
    """A ``pull_request`` webhook payload as GitHub sends it (the fields the receiver reads, and a few more)."""
    return {
        "action": action,
        "number": pull["number"],
        "pull_request": dict(pull),
        "repository": {"name": repo, "full_name": f"{owner}/{repo}", "owner": {"login": owner}},
        "sender": {"login": sender},
    }


def deliver(url: str, event: str, payload: Mapping[str, Any], secret: bytes | None,
            delivery: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST a webhook to ``url`` as GitHub does: JSON, signed with ``secret`` (``None``: unsigned).

    Returns the receiver's status and JSON answer; reuse ``delivery`` to mimic a redelivery.
    """
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/standin",
               "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret, body)
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"ok": False, "error": raw[:200].decode(errors="replace")}
