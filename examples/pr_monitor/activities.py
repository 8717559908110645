"""The PR monitor's side effects: every call to Slack or GitHub is an activity.

Each activity runs at least once: a worker may die after the API acted and
before durable recorded the answer, and then another worker runs it again.
So each one sends ``durable.activity_info().idempotency_key`` (the same on
every retry and every re-run of that call, different for every other call),
and the API, or the stand-in, answers a repeated key without acting twice.

Slack and GitHub ignore ``Idempotency-Key`` today; against them the channel is
still created once (a re-run meets ``name_taken`` and looks the channel up),
while a message or comment whose answer was lost in a crash could appear
twice. README.md says more.
"""

from __future__ import annotations

from typing import Any

import durable

from . import apis
from .apis import PermanentApiError, SlackError
from .config import ConfigError
from .model import PullRequest

__all__ = ["create_channel", "post_message", "comment_on_pull", "pull_state", "RETRY"]

# Transient failures (network, 5xx, rate limits) are retried for about 20 minutes in all;
# a bad token or an unknown channel fails the activity at once, with the API's message.
RETRY = durable.RetryPolicy(max_attempts=8, initial_interval=2.0, backoff=3.0, max_interval=600.0,
                            non_retryable=(PermanentApiError, ConfigError))


def _key() -> str:
    return durable.activity_info().idempotency_key


@durable.activity(retry=RETRY, timeout=120)
def create_channel(pr: PullRequest) -> dict[str, str]:
    """Create the pull request's Slack channel; returns its ``id`` and ``name``."""
    key = _key()
    try:
        answer = apis.slack("conversations.create", idempotency_key=key, body={"name": pr.channel_name})
    except SlackError as exc:
        if exc.error != "name_taken":
            raise
        # A previous run of this call created it and died before recording the answer,
        # or the channel is there from before: use it rather than fail.
        return _find_channel(pr.channel_name, key)
    channel = answer["channel"]
    return {"id": str(channel["id"]), "name": str(channel["name"])}


def _find_channel(name: str, key: str) -> dict[str, str]:
    cursor = ""
    while True:
        # Public channels only: the monitor creates public ones, and private ones would need groups:read.
        params = {"exclude_archived": "true", "limit": "200", "types": "public_channel"}
        if cursor:
            params["cursor"] = cursor
        answer = apis.slack("conversations.list", idempotency_key=key, params=params)
        for channel in answer.get("channels", []):
            if channel.get("name") == name:
                return {"id": str(channel["id"]), "name": name}
        cursor = (answer.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            raise PermanentApiError(
                f"Slack says #{name} exists, but the bot cannot see it (archived, or private without the bot): "
                "unarchive it or invite the bot"
            )


@durable.activity(retry=RETRY, timeout=120)
def post_message(channel_id: str, text: str) -> str:
    """Post ``text`` to the channel; returns the message's timestamp (Slack's message id)."""
    answer = apis.slack("chat.postMessage", idempotency_key=_key(), body={"channel": channel_id, "text": text})
    return str(answer.get("ts", ""))


@durable.activity(retry=RETRY, timeout=120)
def comment_on_pull(pr: PullRequest, body: str) -> str:
    """Comment on the pull request; returns the comment's URL."""
    path = f"/repos/{pr.owner}/{pr.repo}/issues/{pr.number}/comments"
    answer = apis.github("POST", path, idempotency_key=_key(), body={"body": body})
    return str(answer.get("html_url") or answer.get("id", ""))


@durable.activity(retry=RETRY, timeout=120)
def pull_state(pr: PullRequest) -> dict[str, Any]:
    """Whether the pull request is still open: ``{"state": "open"|"closed", "merged": bool}``."""
    answer = apis.github("GET", f"/repos/{pr.owner}/{pr.repo}/pulls/{pr.number}", idempotency_key=_key())
    state = answer.get("state")
    if state not in ("open", "closed"):
        raise PermanentApiError(f"GitHub answered state={state!r} for {pr.slug}; expected 'open' or 'closed'")
    return {"state": state, "merged": bool(answer.get("merged")), "by": (answer.get("merged_by") or {}).get("login")}
