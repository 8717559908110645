"""The PR monitor's workflow on the virtual clock, its activities calling the stand-in over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pr_monitor.model import InvalidEvent, PullRequest
from pr_monitor.standin import Standin
from pr_monitor.workflow import CLOSED, monitor_pr

import durable
from durable.testing import WorkflowEnvironment

DAY = timedelta(days=1)


def _reminders(standin: Standin) -> list[str]:
    return [text for text in standin.slack.messages() if text.startswith("Reminder")]


def test_reminds_every_day_until_the_closed_signal(standin: Standin, pull: PullRequest):
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        started = env.now
        env.signal(handle, CLOSED, {"merged": True, "by": "bob"}, after=3 * DAY + timedelta(hours=1))
        result = env.run(handle)
        history = env.history(handle)
        assert env.now - started < 4 * DAY  # it stopped at the signal, not at a fourth day

    assert result == {"pull_request": "octo/widgets#42", "channel": "pr-octo-widgets-42", "reminders": 3,
                      "outcome": "merged", "noticed_by": "webhook"}
    assert _reminders(standin) == [f"Reminder, day {d}: octo/widgets#42 is still open. {pull.url}" for d in (1, 2, 3)]
    assert standin.slack.messages()[-1] == "octo/widgets#42 was merged by bob. No more reminders here."
    assert [c["body"][:30] for c in standin.github.comments[("octo", "widgets", 42)]] == \
        ["Review discussion is in Slack,"]
    # one reminder per day: each post follows a day's timer, a day after the previous one
    posts = [e["time"] for e in history if e["type"] == "activity_scheduled" and e["activity"].endswith("post_message")]
    gaps = [b - a for a, b in zip(posts[1:-2], posts[2:-1], strict=True)]
    assert gaps == [pytest.approx(DAY.total_seconds(), abs=5)] * 2
    assert [e["type"] for e in history].count("timer_fired") == 3


def test_every_call_carries_the_idempotency_key_of_its_step(standin: Standin, pull: PullRequest):
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        env.signal(handle, CLOSED, {"merged": False}, after=2 * DAY + timedelta(hours=1))
        env.run(handle)
        run_id = handle.describe()["run_id"]
        scheduled = [e["seq"] for e in env.history(handle) if e["type"] == "activity_scheduled"]

    calls = standin.calls()
    assert [c.key for c in calls] == [f"{pull.workflow_id}:{run_id}:{seq}" for seq in scheduled]
    assert len({c.key for c in calls}) == len(calls)  # a different key for every call site
    assert not any(c.duplicate for c in calls)


def test_a_call_whose_answer_was_lost_is_retried_with_the_same_key_and_applied_once(standin: Standin,
                                                                                   pull: PullRequest):
    standin.fail_after_apply("chat.postMessage", "day 1:")  # Slack posts it, then the answer is a 502
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        env.signal(handle, CLOSED, {"merged": True}, after=DAY + timedelta(hours=1))
        assert env.run(handle)["reminders"] == 1
        retried = [e for e in env.history(handle) if e["type"] == "activity_retrying"]

    assert len(retried) == 1 and "502" in retried[0]["error"]["message"]
    day1 = [c for c in standin.calls() if "day 1:" in c.detail]
    assert len(day1) == 2 and day1[0].key == day1[1].key
    assert [c.duplicate for c in day1] == [False, True]
    assert len(_reminders(standin)) == 1  # posted once, though sent twice


def test_a_pull_request_closed_without_a_webhook_is_noticed_by_the_daily_check(standin: Standin,
                                                                             pull: PullRequest):
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        env.advance(DAY + timedelta(hours=1))
        assert len(_reminders(standin)) == 1
        standin.close_pull("octo", "widgets", 42, merged=False)
        result = env.run(handle)

    assert result["outcome"] == "closed" and result["noticed_by"] == "daily check" and result["reminders"] == 1
    assert len(_reminders(standin)) == 1
    assert standin.slack.messages()[-1] == "octo/widgets#42 was closed. No more reminders here."


def test_an_existing_channel_is_reused_when_slack_says_name_taken(standin: Standin, pull: PullRequest):
    status, answer, _ = standin.slack.call("conversations.create", {"name": pull.channel_name})
    assert answer["ok"]
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        env.signal(handle, CLOSED, {"merged": True}, after=timedelta(hours=1))
        env.run(handle)

    assert [c.endpoint for c in standin.calls()][:2] == ["conversations.create", "conversations.list"]
    assert len(standin.slack.channels) == 1
    assert len(standin.slack.messages(answer["channel"]["id"])) == 2  # the intro and the final message


def test_a_missing_token_fails_the_workflow_at_once_naming_the_variable(standin: Standin, pull: PullRequest,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    with WorkflowEnvironment() as env:
        handle = env.start(monitor_pr, pull, DAY.total_seconds(), workflow_id=pull.workflow_id)
        with pytest.raises(durable.WorkflowFailed, match="SLACK_BOT_TOKEN is not set"):
            env.run(handle)
        assert not any(e["type"] == "activity_retrying" for e in env.history(handle))
    assert standin.calls() == []


def test_names_derived_from_the_pull_request():
    pr = PullRequest("Octo-Org", "Widgets.py", 7)
    assert pr.workflow_id == "pr-Octo-Org/Widgets.py-7"
    assert PullRequest("a-b", "c", 1).workflow_id != PullRequest("a", "b-c", 1).workflow_id
    assert pr.channel_name == "pr-octo-org-widgets-py-7"
    assert len(PullRequest("o", "r" * 200, 123456).channel_name) == 80
    with pytest.raises(InvalidEvent, match="positive integer"):
        PullRequest("o", "r", 0)
    with pytest.raises(InvalidEvent, match="no repository.owner.login"):
        PullRequest.from_event({"pull_request": {"number": 1}, "repository": {"name": "r"}})
