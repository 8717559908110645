"""What ``durable demo`` prints after the run: the timeline, and the proof that nothing was sent twice.

Three independent records are merged by time: what the demo did (webhooks,
the kill, the worker starts), what durable recorded (the workflow's
history), and what the stand-in Slack/GitHub received (every call, with its
idempotency key and calling pid). The summary then checks them against each
other: the calls each worker made show where the second one resumed, and the
stand-in's final state (channels, messages, comments) must hold exactly one of
each thing the history asked for.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Mark", "timeline", "summary"]

Say = Callable[[str], None]

WRITES = {"create_channel": "conversations.create", "post_message": "chat.postMessage",
          "comment_on_pull": "issues.createComment"}


@dataclass(frozen=True)
class Mark:
    """Something the demo itself did, at ``time``."""

    time: float
    text: str


def _short(value: Any, limit: int = 48) -> str:
    slug = getattr(value, "slug", None)  # a PullRequest: its owner/repo#number says enough
    text = slug if isinstance(slug, str) else repr(value).replace("\\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seq(key: str | None) -> int | None:
    tail = (key or "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _event_text(event: dict[str, Any], names: dict[int, str], t0: float) -> str | None:
    kind, seq = event["type"], event["seq"]
    if kind == "activity_scheduled":
        names[seq] = event["activity"].rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return f"{names[seq]}({', '.join(_short(a) for a in event['args'])})"
    if kind == "activity_completed":
        attempt = f" (attempt {event['attempt']})" if event.get("attempt", 1) > 1 else ""
        return f"{names.get(seq, 'activity')} done{attempt} -> {_short(event.get('result'))}"
    if kind == "activity_retrying":
        error = event.get("error") or {}
        return f"{names.get(seq, 'activity')} attempt {event['attempt']} failed ({error.get('type', '?')}), retried"
    if kind == "signal_wait_started":
        return None  # shown with the timer it races (the next sequence number)
    if kind == "timer_started":
        return f"any_of: signal 'closed' | timer for a day, fires at +{event['fire_at'] - t0:.1f}s"
    if kind == "timer_fired":
        return "timer fired: a day has passed"
    if kind == "signal_received":
        return f"signal {event['signal']!r} received {_short(event.get('payload'))}"
    if kind == "workflow_completed":
        return "workflow completed"
    return kind.replace("_", " ")


def timeline(say: Say, t0: float, marks: list[Mark], history: list[dict[str, Any]], calls: list[Any],
             workers: dict[int, str]) -> None:
    """Print every mark, history event and stand-in call in time order."""
    rows: list[tuple[float, str]] = [(m.time, f"{'':>4}  ** {m.text}") for m in marks]
    names: dict[int, str] = {}
    for event in history:
        text = _event_text(event, names, t0)
        if text is not None:
            seq = "" if event["seq"] < 0 else str(event["seq"])
            rows.append((event["time"], f"{seq:>4}  {text}"))
    for call in calls:
        who = workers.get(call.caller, f"pid {call.caller}")
        text = f"{'':>4}     -> {call.api} {call.endpoint} {call.detail!r} [{who}, key …:{_seq(call.key)}]"
        if call.duplicate:
            text += " DUPLICATE: answered from the first call, not applied again"
        if call.fault:
            text += f" ({call.fault})"
        rows.append((call.time, text))
    say("timeline (seconds since the start; seq = the workflow's sequence number; -> = a call to the stand-in):")
    for when, text in sorted(rows, key=lambda row: row[0]):
        say(f"  +{when - t0:6.2f}s {text}")


def summary(say: Say, history: list[dict[str, Any]], calls: list[Any], workers: dict[int, str],
            state: dict[str, int]) -> bool:
    """Print where the second worker resumed and the call counts; False if anything was delivered twice."""
    callers: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        if call.key:
            callers[call.key].add(workers.get(call.caller, f"pid {call.caller}"))
    first, second = sorted(set(workers.values()))[:2] if len(workers) >= 2 else ("worker 1", "worker 2")
    rerun = sorted((k for k, who in callers.items() if {first, second} <= who), key=lambda k: _seq(k) or 0)
    only_first = [k for k, who in callers.items() if who == {first}]
    only_second = sorted((_seq(k) or 0 for k, who in callers.items() if who == {second}))
    pid = {name: p for p, name in workers.items()}
    say(f"resumed where it stopped: {first} made {len(only_first) + len(rerun)} calls and was killed waiting for "
        f"the answer to seq {', '.join(str(_seq(k)) for k in rerun) or '-'}; {second} (pid {pid.get(second)}) "
        f"re-sent {len(rerun)} call{'s' if len(rerun) != 1 else ''} ({_rerun_text(rerun, calls)}) and went on "
        f"with {len(only_second)} new calls (seq {_span(only_second)}); nothing else {first} had done ran again.")

    say("\ncalls the stand-in APIs received, by endpoint:")
    say(f"  {'endpoint':<30} {'received':>8} {'distinct keys':>14} {'deduped':>8} {'applied':>8}")
    by_endpoint: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for call in calls:
        by_endpoint[(call.api, call.endpoint)].append(call)
    for (api, endpoint), group in sorted(by_endpoint.items()):
        keys = len({c.key for c in group if c.key})
        if group[0].method == "POST":
            deduped, applied = sum(c.duplicate for c in group), sum(c.applied for c in group)
            say(f"  {api + ' ' + endpoint:<30} {len(group):>8} {keys:>14} {deduped:>8} {applied:>8}")
        else:
            say(f"  {api + ' ' + endpoint + ' (read)':<30} {len(group):>8} {keys:>14} {'-':>8} {'-':>8}")
    writes = [c for c in calls if c.method == "POST"]
    applied_keys = Counter(c.key for c in writes if c.applied)
    twice = sum(n - 1 for n in applied_keys.values() if n > 1) + sum(1 for c in writes if c.applied and not c.key)
    say(f"writes: {len(writes)} received, {len({c.key for c in writes if c.key})} distinct idempotency keys, "
        f"duplicates deduped: {sum(c.duplicate for c in writes)}, applied: {sum(c.applied for c in writes)}; "
        f"duplicates delivered: {twice}")

    asked = Counter(e["activity"].rsplit(".", 1)[-1].rsplit(":", 1)[-1] for e in history
                    if e["type"] == "activity_scheduled")
    matches = (state["channels"] == asked["create_channel"] and state["messages"] == asked["post_message"]
               and state["comments"] == asked["comment_on_pull"])
    say(f"Slack now holds {state['channels']} channel with {state['messages']} messages and GitHub "
        f"{state['comments']} comment; the workflow's history asked for {asked['create_channel']} create_channel, "
        f"{asked['post_message']} post_message, {asked['comment_on_pull']} comment_on_pull: "
        f"{'one of each, nothing sent twice' if matches and not twice else 'MISMATCH: something was sent twice'}.")
    return matches and not twice


def _span(seqs: list[int]) -> str:
    return f"{seqs[0]}-{seqs[-1]}" if len(seqs) > 1 else (str(seqs[0]) if seqs else "-")


def _rerun_text(keys: list[str], calls: list[Any]) -> str:
    parts = []
    for key in keys:
        mine = [c for c in calls if c.key == key]
        fate = "deduped by its key" if any(c.duplicate for c in mine) else "sent again"
        parts.append(f"seq {_seq(key)} {mine[0].endpoint}, {fate}")
    return "; ".join(parts) or "none"
