"""The pull request as the workflow sees it, and the names derived from it.

One small frozen value travels from the webhook to the workflow's arguments
(so it is recorded in history and replayed as is); the workflow id and the
Slack channel name are derived from it in one place, so the receiver and the
workflow cannot disagree about them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PullRequest", "InvalidEvent"]

_CHANNEL_BAD = re.compile(r"[^a-z0-9_-]+")
_SLACK_NAME_MAX = 80


class InvalidEvent(ValueError):
    """A webhook payload lacks what a ``pull_request`` event must carry."""


def _field(data: Any, *path: str) -> Any:
    value = data
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise InvalidEvent(f"the pull_request event has no {'.'.join(path)}")
        value = value[key]
    return value


@dataclass(frozen=True)
class PullRequest:
    """Which pull request, and what a human needs to recognise it."""

    owner: str
    repo: str
    number: int
    title: str = ""
    url: str = ""
    author: str = ""

    def __post_init__(self) -> None:
        if not self.owner or "/" in self.owner or not self.repo or "/" in self.repo:
            raise InvalidEvent(f"a pull request needs an owner and a repository name, not {self.owner!r}/{self.repo!r}")
        if not isinstance(self.number, int) or isinstance(self.number, bool) or self.number < 1:
            raise InvalidEvent(f"a pull request number is a positive integer, not {self.number!r}")

    @classmethod
    def from_event(cls, payload: Mapping[str, Any]) -> PullRequest:
        """The pull request a GitHub ``pull_request`` webhook payload is about."""
        pull = _field(payload, "pull_request")
        number = _field(pull, "number")
        return cls(
            owner=str(_field(payload, "repository", "owner", "login")),
            repo=str(_field(payload, "repository", "name")),
            number=number,
            title=str(pull.get("title") or ""),
            url=str(pull.get("html_url") or ""),
            author=str((pull.get("user") or {}).get("login") or ""),
        )

    @property
    def slug(self) -> str:
        """``owner/repo#number``, as GitHub writes it."""
        return f"{self.owner}/{self.repo}#{self.number}"

    @property
    def workflow_id(self) -> str:
        """One workflow per pull request: ``pr-owner/repo-number``.

        The ``/`` keeps it unambiguous (owners and repositories may contain
        ``-``, never ``/``), so two pull requests never share a workflow.
        """
        return f"pr-{self.owner}/{self.repo}-{self.number}"

    @property
    def channel_name(self) -> str:
        """A valid Slack channel name: lowercase, ``[a-z0-9_-]``, at most 80 characters."""
        stem = _CHANNEL_BAD.sub("-", f"pr-{self.owner}-{self.repo}".lower()).strip("-")
        suffix = f"-{self.number}"
        return stem[: _SLACK_NAME_MAX - len(suffix)].rstrip("-") + suffix
