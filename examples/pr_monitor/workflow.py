"""The workflow: one per pull request, from "opened" to "closed or merged".

It is a plain generator. Each ``yield`` hands durable a command (an activity,
a race between the ``closed`` signal and a day's timer) and gets its result
back; durable records both, so after a crash any worker rebuilds the
generator by replaying that record and carries on from the same line,
without calling Slack or GitHub again for what is already done.

Workers import it by name: ``durable worker --import pr_monitor.workflow``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import durable

from .activities import comment_on_pull, create_channel, post_message, pull_state
from .model import PullRequest

__all__ = ["monitor_pr", "CLOSED"]

CLOSED = "closed"  # the signal the webhook receiver sends when the pull request is closed or merged


def _closing(payload: Any) -> dict[str, Any]:
    """The ``closed`` signal's payload, read defensively: it arrives from outside."""
    data = payload if isinstance(payload, dict) else {}
    return {"merged": bool(data.get("merged")), "by": data.get("by") or None}


@durable.workflow
def monitor_pr(pr: PullRequest, day_seconds: float = 24 * 3600.0) -> Generator[Any, Any, dict[str, Any]]:
    """Open a Slack channel for ``pr``, remind it every ``day_seconds`` until closed; return a summary."""
    if not isinstance(pr, PullRequest):
        raise TypeError(f"monitor_pr takes a pr_monitor.model.PullRequest, not {type(pr).__name__}")
    if not (isinstance(day_seconds, (int, float)) and day_seconds > 0):
        raise ValueError(f"day_seconds must be a positive number, not {day_seconds!r}")

    channel = yield create_channel(pr)
    yield post_message(channel["id"], f"New pull request {pr.slug} by {pr.author or 'someone'}: {pr.title}\n{pr.url}")
    yield comment_on_pull(pr, f"Review discussion is in Slack, #{channel['name']}. "
                              "It gets a reminder every day until this pull request is closed or merged.")
    reminders = 0
    durable.set_status({"channel": channel["name"], "reminders": reminders})
    while True:
        # Whichever comes first: the webhook's `closed` signal, or a day passing.
        index, payload = yield durable.any_of(durable.wait_signal(CLOSED), durable.sleep(day_seconds))
        if index == 0:
            closed, noticed = _closing(payload), "webhook"
            break
        # A webhook can be lost (GitHub gives up after a failed delivery): ask GitHub before nagging.
        state = yield pull_state(pr)
        if state["state"] != "open":
            closed, noticed = _closing(state), "daily check"
            break
        reminders += 1
        durable.set_status({"channel": channel["name"], "reminders": reminders})
        yield post_message(channel["id"], f"Reminder, day {reminders}: {pr.slug} is still open. {pr.url}")

    outcome = "merged" if closed["merged"] else "closed"
    by = f" by {closed['by']}" if closed["by"] else ""
    yield post_message(channel["id"], f"{pr.slug} was {outcome}{by}. No more reminders here.")
    return {"pull_request": pr.slug, "channel": channel["name"], "reminders": reminders, "outcome": outcome,
            "noticed_by": noticed}
