"""The PR monitor's webhook receiver, through its Flask app: signatures, one workflow per PR, the closed signal."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from pr_monitor import activities, config
from pr_monitor.app import create_app
from pr_monitor.model import PullRequest
from pr_monitor.standin import pull_request_event
from pr_monitor.webhook import WebhookReceiver, sign
from pr_monitor.workflow import monitor_pr

from durable.testing import WorkflowEnvironment

SECRET = b"it's a secret to everybody"
PULL = {"number": 42, "title": "Add sprocket support", "html_url": "https://github.com/octo/widgets/pull/42",
        "user": {"login": "alice"}, "state": "open", "merged": False, "merged_by": None}
WORKFLOW_ID = "pr-octo/widgets-42"


def _event(action: str, **pull: Any) -> bytes:
    return json.dumps(pull_request_event(action, "octo", "widgets", {**PULL, **pull}, "bob")).encode()


def _post(http: FlaskClient, body: bytes, signature: str | None, event: str = "pull_request",
          content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "d-1", "Content-Type": content_type}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = http.post("/webhook", data=body, headers=headers)
    return response.status_code, response.get_json()


@pytest.fixture
def env() -> Iterator[WorkflowEnvironment]:
    with WorkflowEnvironment() as environment:
        yield environment


@pytest.fixture
def http(env: WorkflowEnvironment) -> FlaskClient:
    return create_app(WebhookReceiver(env.client, SECRET, day_seconds=3600)).test_client()


@pytest.fixture
def effects(env: WorkflowEnvironment) -> list[tuple[str, Any]]:
    """Fakes for every activity (no HTTP at all here), recording what they were asked."""
    done: list[tuple[str, Any]] = []
    env.replace(activities.create_channel, lambda pr: done.append(("channel", pr)) or {"id": "C1", "name": "c"})
    env.replace(activities.post_message, lambda channel, text: done.append(("post", text)) or "1.0")
    env.replace(activities.comment_on_pull, lambda pr, body: done.append(("comment", body)) or "https://c")
    env.replace(activities.pull_state, lambda pr: {"state": "open", "merged": False, "by": None})
    return done


def test_a_signed_opened_starts_exactly_one_workflow_even_when_redelivered(env: WorkflowEnvironment,
                                                                           http: FlaskClient):
    body = _event("opened")
    assert _post(http, body, sign(SECRET, body)) == (202, {"ok": True, "workflow_id": WORKFLOW_ID, "started": True})
    status, answer = _post(http, body, sign(SECRET, body))  # GitHub redelivers
    assert (status, answer["started"]) == (200, False) and "redelivered" in answer["note"]

    handles = env.client.list()
    assert [h.id for h in handles] == [WORKFLOW_ID]
    info = handles[0].describe()
    assert info["path"] == "pr_monitor.workflow:monitor_pr" and info["status"] == "running"


@pytest.mark.parametrize("signature, expected", [
    (None, "missing X-Hub-Signature-256 header"),
    (sign(b"another secret", _event("opened")), "does not match the body"),
    ("sha1=" + sign(SECRET, _event("opened"))[7:], "malformed X-Hub-Signature-256"),
    (sign(SECRET, _event("opened", title="something else")), "does not match the body"),
], ids=["missing", "wrong secret", "malformed", "tampered body"])
def test_missing_or_bad_signatures_are_refused_with_401(env: WorkflowEnvironment, http: FlaskClient,
                                                         signature: str | None, expected: str):
    status, answer = _post(http, _event("opened"), signature)
    assert status == 401 and answer["ok"] is False and expected in answer["error"]
    assert env.client.list() == []  # nothing started


def test_a_closed_webhook_is_the_closed_signal_and_ends_the_workflow(env: WorkflowEnvironment, http: FlaskClient,
                                                                    effects: list[tuple[str, Any]]):
    opened = _event("opened")
    assert _post(http, opened, sign(SECRET, opened))[0] == 202
    handle = env.client.get(WORKFLOW_ID)
    env.advance(timedelta(hours=2, minutes=30))  # two reminders (a "day" is an hour here)

    closed = _event("closed", state="closed", merged=True, merged_by={"login": "carol"})
    status, answer = _post(http, closed, sign(SECRET, closed))
    assert (status, answer["signalled"], answer["merged"]) == (202, True, True)
    signals = [e for e in handle.history() if e["type"] == "signal_received"]
    assert [(s["signal"], s["payload"]) for s in signals] == [("closed", {"merged": True, "by": "carol"})]

    assert env.run(handle) == {"pull_request": "octo/widgets#42", "channel": "c", "reminders": 2,
                               "outcome": "merged", "noticed_by": "webhook"}
    assert effects[-1] == ("post", "octo/widgets#42 was merged by carol. No more reminders here.")
    status, answer = _post(http, closed, sign(SECRET, closed))  # redelivered after the end: not a 500
    assert (status, answer["signalled"]) == (200, False) and "already completed" in answer["note"]


def test_a_closed_webhook_for_an_unknown_pull_request_is_answered_200(env: WorkflowEnvironment, http: FlaskClient):
    closed = _event("closed", state="closed")
    status, answer = _post(http, closed, sign(SECRET, closed))
    assert (status, answer["signalled"]) == (200, False) and "no workflow with id" in answer["note"]


def test_other_deliveries(env: WorkflowEnvironment, http: FlaskClient):
    ping = b'{"zen": "Keep it logically awesome."}'
    assert _post(http, ping, sign(SECRET, ping), event="ping")[0] == 200
    issue = b'{"action": "opened"}'
    status, answer = _post(http, issue, sign(SECRET, issue), event="issues")
    assert status == 202 and "ignored" in answer["note"]
    edited = _event("edited")
    assert _post(http, edited, sign(SECRET, edited))[0] == 202
    broken = b"{not json"
    status, answer = _post(http, broken, sign(SECRET, broken))
    assert status == 400 and "not JSON" in answer["error"]
    partial = b'{"action": "opened", "pull_request": {"number": 1}}'
    status, answer = _post(http, partial, sign(SECRET, partial))
    assert status == 400 and "repository" in answer["error"]
    status, answer = _post(http, edited, sign(SECRET, edited), event="")
    assert status == 400 and "X-GitHub-Event" in answer["error"]
    assert env.client.list() == []


def test_a_form_encoded_delivery_works_too(env: WorkflowEnvironment, http: FlaskClient):
    body = urllib.parse.urlencode({"payload": _event("opened").decode()}).encode()
    status, _ = _post(http, body, sign(SECRET, body), content_type="application/x-www-form-urlencoded")
    assert status == 202 and [h.id for h in env.client.list()] == [WORKFLOW_ID]


def test_the_receiver_needs_a_secret(env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="secret is empty"):
        WebhookReceiver(env.client, "")
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    with pytest.raises(config.ConfigError, match="GITHUB_WEBHOOK_SECRET is not set"):
        create_app()


def test_the_workflow_gets_the_pull_request_from_the_event(env: WorkflowEnvironment, http: FlaskClient,
                                                           effects: list[tuple[str, Any]]):
    opened = _event("opened")
    _post(http, opened, sign(SECRET, opened))
    env.advance(timedelta(seconds=1))
    assert effects[0] == ("channel", PullRequest("octo", "widgets", 42, "Add sprocket support",
                                                 "https://github.com/octo/widgets/pull/42", "alice"))
    assert monitor_pr.path == env.client.get(WORKFLOW_ID).describe()["path"]
