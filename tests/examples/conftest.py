"""Fixtures for examples/pr_monitor: the stand-in Slack/GitHub, with the activities pointed at it.

``pr_monitor`` is importable because setup.cfg's ``[tool:pytest] pythonpath``
puts ``examples/`` on the path, the way its workers and ``durable demo`` do.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pr_monitor.model import PullRequest
from pr_monitor.standin import Standin

OWNER, REPO, NUMBER = "octo", "widgets", 42


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Standin]:
    with Standin() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def pull(standin: Standin) -> PullRequest:
    """An open pull request on the stand-in GitHub."""
    shown = standin.open_pull(OWNER, REPO, NUMBER, title="Add sprocket support", author="alice")
    return PullRequest(OWNER, REPO, NUMBER, shown["title"], shown["html_url"], "alice")
