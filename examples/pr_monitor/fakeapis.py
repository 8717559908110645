"""What the stand-in answers: just enough of Slack's and GitHub's behaviour, as plain state.

No HTTP here (``standin`` serves it and adds idempotency keys, records and
faults): each endpoint takes the parsed request and returns ``(HTTP status,
JSON answer, a short description for the records)``, shaped like the real
API's, errors included (Slack's ``ok: false`` with an error code in a 200,
GitHub's 404 and 422 with a ``message``), so the activities meet here the
answers they will meet in production.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeSlack", "FakeGitHub", "Answer"]

Answer = tuple[int, dict[str, Any], str]

_CHANNEL_NAME = re.compile(r"[a-z0-9_-]{1,80}")


def _text(value: Any, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class FakeSlack:
    """Channels and messages, for ``conversations.create``, ``conversations.list`` and ``chat.postMessage``."""

    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> channel, with its "messages"
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, args: dict[str, Any]) -> Answer:
        endpoint = {"conversations.create": self._create, "conversations.list": self._list,
                    "chat.postMessage": self._post}.get(method)
        if endpoint is None:
            return 200, {"ok": False, "error": "unknown_method"}, method
        with self.lock:
            return endpoint(args)

    def _create(self, args: dict[str, Any]) -> Answer:
        name = str(args.get("name") or "")
        if not _CHANNEL_NAME.fullmatch(name):
            return 200, {"ok": False, "error": "invalid_name"}, f"#{name}"
        if any(channel["name"] == name for channel in self.channels.values()):
            return 200, {"ok": False, "error": "name_taken"}, f"#{name}"
        channel_id = f"C{next(self._ids):08d}"
        self.channels[channel_id] = {"id": channel_id, "name": name, "is_channel": True, "is_archived": False,
                                     "created": int(time.time()), "messages": []}
        return 200, {"ok": True, "channel": self._public(channel_id)}, f"#{name}"

    def _list(self, args: dict[str, Any]) -> Answer:
        try:
            start, limit = int(args.get("cursor") or 0), max(1, min(int(args.get("limit") or 100), 1000))
        except ValueError:
            return 200, {"ok": False, "error": "invalid_cursor"}, "list"
        ids = sorted(self.channels)
        page = [self._public(i) for i in ids[start: start + limit]]
        following = str(start + limit) if start + limit < len(ids) else ""
        return 200, {"ok": True, "channels": page, "response_metadata": {"next_cursor": following}}, "list"

    def _post(self, args: dict[str, Any]) -> Answer:
        channel_id, text = str(args.get("channel") or ""), str(args.get("text") or "")
        if channel_id not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}, _text(text)
        if not text:
            return 200, {"ok": False, "error": "no_text"}, ""
        messages = self.channels[channel_id]["messages"]
        ts = f"{int(time.time())}.{len(messages) + 1:06d}"
        messages.append({"type": "message", "ts": ts, "text": text})
        return 200, {"ok": True, "channel": channel_id, "ts": ts, "message": messages[-1]}, _text(text)

    def _public(self, channel_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.channels[channel_id].items() if k != "messages"}

    def messages(self, channel_id: str | None = None) -> list[str]:
        """Texts posted, in order (to one channel, or to all)."""
        with self.lock:
            chosen = [self.channels[channel_id]] if channel_id else list(self.channels.values())
            return [m["text"] for channel in chosen for m in channel["messages"]]


@dataclass
class FakeGitHub:
    """Pull requests and their comments, for ``GET .../pulls/N`` and ``POST .../issues/N/comments``."""

    pulls: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    comments: dict[tuple[str, str, int], list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    _PULL = re.compile(r"/repos/([^/]+)/([^/]+)/pulls/(\d+)")
    _COMMENTS = re.compile(r"/repos/([^/]+)/([^/]+)/issues/(\d+)/comments")

    def call(self, method: str, path: str, body: dict[str, Any]) -> tuple[str, Answer]:
        """Returns the endpoint's name (as GitHub's docs call it) and the answer."""
        if method == "GET" and (match := self._PULL.fullmatch(path)):
            return "pulls.get", self._get_pull(self._ref(match))
        if method == "POST" and (match := self._COMMENTS.fullmatch(path)):
            return "issues.createComment", self._comment(self._ref(match), body)
        return f"{method} {path}", (404, {"message": "Not Found"}, path)

    @staticmethod
    def _ref(match: re.Match[str]) -> tuple[str, str, int]:
        return match[1], match[2], int(match[3])

    def set_pull(self, owner: str, repo: str, number: int, **fields: Any) -> dict[str, Any]:
        """Create or update a pull request; returns it as the API shows it."""
        with self.lock:
            pull = self.pulls.setdefault((owner, repo, number), {
                "number": number, "state": "open", "merged": False, "merged_by": None, "title": "",
                "html_url": f"https://github.com/{owner}/{repo}/pull/{number}", "user": {"login": ""},
            })
            pull.update(fields)
            return dict(pull)

    def _get_pull(self, ref: tuple[str, str, int]) -> Answer:
        with self.lock:
            pull = self.pulls.get(ref)
            if pull is None:
                return 404, {"message": "Not Found"}, f"{ref[0]}/{ref[1]}#{ref[2]}"
            return 200, dict(pull), f"{ref[0]}/{ref[1]}#{ref[2]} is {pull['state']}"

    def _comment(self, ref: tuple[str, str, int], body: dict[str, Any]) -> Answer:
        text = str(body.get("body") or "")
        with self.lock:
            if ref not in self.pulls:
                return 404, {"message": "Not Found"}, _text(text)
            if not text:
                return 422, {"message": "Validation Failed", "errors": [{"field": "body", "code": "missing"}]}, ""
            comment_id = next(self._ids)
            comment = {"id": comment_id, "body": text,
                       "html_url": f"https://github.com/{ref[0]}/{ref[1]}/pull/{ref[2]}#issuecomment-{comment_id}"}
            self.comments.setdefault(ref, []).append(comment)
            return 201, comment, _text(text)
