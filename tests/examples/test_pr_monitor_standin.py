"""The stand-in Slack/GitHub: it must dedupe and record exactly, or the demo's proof proves nothing."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import pytest
from pr_monitor import apis
from pr_monitor.config import ConfigError
from pr_monitor.standin import Standin


def _http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_repeated_key_is_answered_from_memory_and_not_applied_again(standin: Standin):
    channel = apis.slack("conversations.create", idempotency_key="k0", body={"name": "pr-x-1"})["channel"]["id"]
    first = apis.slack("chat.postMessage", idempotency_key="k1", body={"channel": channel, "text": "hello"})
    again = apis.slack("chat.postMessage", idempotency_key="k1", body={"channel": channel, "text": "hello"})
    other = apis.slack("chat.postMessage", idempotency_key="k2", body={"channel": channel, "text": "hello"})

    assert again == first and other["ts"] != first["ts"]
    assert standin.slack.messages(channel) == ["hello", "hello"]  # k1 once, k2 once
    calls = standin.calls()
    assert [(c.path, c.key, c.duplicate, c.applied) for c in calls] == [
        ("/slack/api/conversations.create", "k0", False, True),
        ("/slack/api/chat.postMessage", "k1", False, True),
        ("/slack/api/chat.postMessage", "k1", True, False),
        ("/slack/api/chat.postMessage", "k2", False, True),
    ]
    assert {c.caller for c in calls} == {os.getpid()}  # from the User-Agent


def test_a_key_reused_for_another_request_is_refused(standin: Standin):
    standin.open_pull("o", "r", 1)
    apis.github("POST", "/repos/o/r/issues/1/comments", idempotency_key="k", body={"body": "one"})
    with pytest.raises(apis.PermanentApiError, match="422.*was used for /github/repos/o/r/issues/1/comments"):
        apis.slack("chat.postMessage", idempotency_key="k", body={"channel": "C1", "text": "two"})


def test_answers_look_like_the_real_apis(standin: Standin, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(apis.SlackError, match="channel_not_found"):
        apis.slack("chat.postMessage", idempotency_key="k", body={"channel": "C404", "text": "x"})
    with pytest.raises(apis.PermanentApiError, match="404: Not Found"):
        apis.github("GET", "/repos/o/r/pulls/9", idempotency_key="k")
    status, answer = _http(f"{standin.github_url}/repos/o/r/pulls/9")  # no token at all
    assert (status, answer["message"]) == (401, "Requires authentication")
    standin.fail_after_apply("conversations.create", status=503)
    with pytest.raises(apis.TransientApiError, match="503"):
        apis.slack("conversations.create", idempotency_key="k5", body={"name": "pr-y-2"})
    assert [c["name"] for c in standin.slack.channels.values()] == ["pr-y-2"]  # applied before the 503
    monkeypatch.setenv("SLACK_BOT_TOKEN", " ")
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        apis.slack("chat.postMessage", idempotency_key="k", body={"channel": "C1", "text": "x"})


def test_other_processes_read_the_records_and_set_pull_requests_over_http(standin: Standin):
    status, pull = _http(f"{standin.url}/_standin/pulls", {"owner": "o", "repo": "r", "number": 3, "state": "closed"})
    assert status == 200 and pull["state"] == "closed"
    assert apis.github("GET", "/repos/o/r/pulls/3", idempotency_key="k")["state"] == "closed"
    status, answer = _http(f"{standin.url}/_standin/calls")
    assert status == 200
    assert [(c["method"], c["path"], c["key"], c["duplicate"]) for c in answer["calls"]] == [
        ("GET", "/github/repos/o/r/pulls/3", "k", False)]
    status, answer = _http(f"{standin.url}/_standin/pulls", {"repo": "r"})
    assert status == 400 and "owner, repo, number" in answer["message"]
