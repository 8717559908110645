"""The operator commands (list, history, inspect, status/result/signal/cancel) on the virtual clock.

``WorkflowEnvironment`` runs the real kernel on fakeredis with a clock that
skips time, so durations in a timeline are exact (a one-hour timeout took
``1h00m``) and ``inspect`` sees a workflow suspended where the test left it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable import cli
from durable.testing import WorkflowEnvironment
from tests import workflows

T0 = 1_800_000_000.0
WORKFLOWS_PY = Path(workflows.__file__).read_text().splitlines()


def marked(mark: str) -> int:
    """The line number of the ``# inspect: <mark>`` line in tests/workflows.py."""
    return next(n for n, line in enumerate(WORKFLOWS_PY, 1) if line.rstrip().endswith(f"# inspect: {mark}"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkflowEnvironment]:
    workflows.CALLS.clear()
    with WorkflowEnvironment(start=T0) as environment:
        monkeypatch.setattr(cli, "Client", lambda url=None: environment.client)
        yield environment


@pytest.fixture
def run(env, capsys):
    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def rows(out: str) -> list[list[str]]:
    """A table's data rows, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()[1:]]


# -- list ------------------------------------------------------------------------------------------


def test_list_filters_by_status_and_name_and_limits(env, run):
    for workflow_id in ("a1", "a2"):
        env.run(env.start(workflows.arithmetic, 1, workflow_id=workflow_id))
        env.advance(1)  # distinct creation times: the listing is oldest first
    pr = env.start(workflows.pr_monitor, 7, 60.0, workflow_id="p1")
    env.advance(61)  # one reminder: custom status {'reminders': 1}
    env.start(workflows.waits_forever, workflow_id="w1")
    env.advance(1)

    code, out, err = run("list")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["ID", "NAME", "STATUS", "STARTED", "UPDATED", "CUSTOM", "STATUS"]
    table = rows(out)
    assert [r[:3] for r in table] == [["a1", "arithmetic", "completed"], ["a2", "arithmetic", "completed"],
                                      ["p1", "pr_monitor", "running"], ["w1", "waits_forever", "running"]]
    assert table[2][-1] == "{'reminders': 1}"
    assert [r[0] for r in rows(run("list", "--status", "running")[1])] == ["p1", "w1"]
    assert [r[0] for r in rows(run("list", "--name", "arithmetic")[1])] == ["a1", "a2"]
    assert [r[0] for r in rows(run("list", "--name", "tests.workflows:*_*")[1])] == ["p1", "w1"]  # the path
    assert [r[0] for r in rows(run("list", "--limit", "2")[1])] == ["p1", "w1"]  # the newest
    assert [r[0] for r in rows(run("list", "--name", "arithmetic", "--limit", "1")[1])] == ["a2"]
    assert run("list", "--name", "nothing*") == (0, "no workflows match\n", "")

    code, out, _ = run("list", "--status", "running", "--json")
    listed = json.loads(out)
    assert [(r["workflow_id"], r["status"], r["custom_status"]) for r in listed] == [
        ("p1", "running", {"reminders": 1}), ("w1", "running", None)]
    assert {"path", "queue", "run_id", "created_at", "updated_at", "held", "children"} <= set(listed[0])
    assert pr.status() == "running"


def test_list_marks_held_workflows(env, run):
    env.start(workflows.calls_missing_activity, workflow_id="m1")
    env.advance(1)
    assert rows(run("list")[1])[0][:3] == ["m1", "calls_missing_activity", "running (held)"]


# -- history ---------------------------------------------------------------------------------------


def test_history_is_a_timeline_with_durations_and_results(env, run):
    handle = env.start(workflows.pr_monitor, 7, 3600.0, workflow_id="p1")
    env.signal(handle, "closed", "merged", after=2.5 * 3600)
    env.run(handle)
    code, out, err = run("history", "p1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("p1  pr_monitor  completed  started ") and "(11 events" in lines[0]
    assert lines[1].split() == ["time", "seq", "command", "took", "result"]
    assert [line.split(None, 2)[:2] for line in lines[2:]] == [
        ["+0ms", "-"], ["+0ms", "0"], ["+1h00m", "1"], ["+1h00m", "2"], ["+2h00m", "3"], ["+2h00m", "4"],
        ["+2h30m", "-"], ["+2h30m", "-"]]
    assert lines[2].endswith("started pr_monitor(7, 3600.0)")
    assert re.search(r"wait_signal\('closed', timeout=1h00m\)\s+1h00m\s+timed out$", lines[3])
    assert re.search(r"add\(1, 0\)\s+0ms\s+1$", lines[4])
    assert re.search(r"wait_signal\('closed', timeout=1h00m\)\s+30m00s\s+'merged'$", lines[7])
    assert re.search(r"signal 'closed' received\s+'merged'$", lines[8])
    assert re.search(r"completed\s+'#7 merged after 2 reminders'$", lines[9])

    code, out, _ = run("history", "p1", "--json", "--timeline")
    data = json.loads(out)
    assert (data["workflow_id"], data["status"], data["events"], data["started_at"]) == ("p1", "completed", 11, T0)
    steps = [(e["seq"], e["kind"], e["state"], e["duration"]) for e in data["timeline"]]
    assert steps == [(-1, "started", "", None), (0, "signal_wait", "timed_out", 3600.0), (1, "activity", "ok", 0.0),
                     (2, "signal_wait", "timed_out", 3600.0), (3, "activity", "ok", 0.0),
                     (4, "signal_wait", "received", 1800.0), (-1, "signal", "", None), (-1, "completed", "", None)]
    assert data["timeline"][2]["name"] == "tests.workflows:add"

    code, out, _ = run("history", "p1", "--iso")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\s+0\s+wait_signal", out.splitlines()[3].strip())


def test_history_shows_failures_retries_cancellation_and_children(env, run):
    env.run(env.start(workflows.with_retry, "k", workflow_id="retry"))
    env.run(env.start(workflows.catches_failure, workflow_id="caught"))
    env.start(workflows.fails, workflow_id="broke")
    env.advance(1)
    compensating = env.start(workflows.compensates, workflow_id="undo")
    env.advance(5)
    env.client.cancel("undo")
    env.run(compensating)
    env.run(env.start(workflows.parent_of_children, 1, workflow_id="kids"))

    assert re.search(r"flaky\('k', 2\)\s+0ms\s+'k-ok-3' \(3 attempts\)$", run("history", "retry")[1], re.M)
    out = run("history", "caught")[1]
    assert re.search(r"always_fails\('boom'\)\s+0ms\s+FAILED ValueError: boom \(2 attempts\)$", out, re.M)
    assert re.search(r"completed\s+'caught ValueError: boom; then 2'$", out.splitlines()[-1])
    assert run("history", "broke")[1].splitlines()[-1].split()[-4:] == ["FAILED", "KeyError:", "'missing", "thing'"]
    undo = run("history", "undo")[1].splitlines()
    assert re.search(r"\+0ms\s+0\s+wait_signal\('never'\)\s+\(abandoned\)$", undo[3])
    assert re.search(r"\+5\.0s\s+-\s+cancel requested$", undo[4])
    assert re.search(r"\+5\.0s\s+1\s+add\(-1, 0\)\s+0ms\s+-1$", undo[5])
    kids = run("history", "kids")[1]
    assert re.search(r"0\s+child child_adds kids/0\s+0ms\s+1001$", kids, re.M)
    assert re.search(r"2\s+child child_adds explicit-1\s+0ms\s+1003$", kids, re.M)
    assert re.search(r"3\s+child child_fails kids/3\s+0ms\s+FAILED ValueError: child broke$", kids, re.M)


def test_history_json_is_still_the_raw_events_and_events_lists_them(env, run):
    env.run(env.start(workflows.arithmetic, 1, workflow_id="c1"))
    events = json.loads(run("history", "c1", "--json")[1])
    assert [e["type"] for e in events] == ["activity_scheduled", "activity_completed"] * 3 + ["workflow_completed"]
    assert events[0]["activity"] == "tests.workflows:add" and events[0]["args"] == [1, 1]
    lines = run("history", "c1", "--events")[1].splitlines()
    assert len(lines) == 7 and "activity_scheduled" in lines[0] and "workflow_completed" in lines[-1]


def test_history_of_a_continued_run_starts_when_that_run_did(env, run):
    env.start(workflows.daily_reminder, 0, 10, workflow_id="daily")
    env.advance(7.5 * 86400)  # the first run slept 7 days and continued as new; the second sleeps again
    data = json.loads(run("history", "daily", "--json", "--timeline")[1])
    assert data["started_at"] == T0 + 7 * 86400
    assert data["timeline"][0]["command"] == "started daily_reminder(7, 10)"
    lines = run("history", "daily")[1].splitlines()
    assert [line.split(None, 2)[:2] for line in lines[2:]] == [["+0ms", "-"], ["+0ms", "0"]]
    assert re.search(r"sleep 1d00h\s+\(waiting\)  \[until .*\]$", lines[3])


def test_history_shows_what_is_still_awaited(env, run):
    env.start(workflows.slow_retry, workflow_id="s1")
    env.advance(1)
    last = run("history", "s1")[1].splitlines()[-1]
    assert re.search(r"fails_once_slowly\('x'\)\s+\(waiting\)  \[attempt 1 failed: ConnectionError: try again", last)


# -- inspect ---------------------------------------------------------------------------------------


def test_inspect_shows_the_suspended_line_locals_and_what_it_waits_on(env, run):
    env.start(workflows.inspected, "A-1", 3, workflow_id="ins")
    env.advance(60)  # the activity ran; now asleep for an hour
    code, out, err = run("inspect", "ins")
    assert (code, err) == (0, "")
    line = marked("timer")
    assert out.splitlines()[0] == "ins  inspected  running  (run " + env.client.store.meta("ins").run_id[:12] + \
        ", 3 events replayed)"
    assert "custom status: {'stage': 'sleeping'}" in out
    assert re.search(rf"tests/workflows\.py:{line} in inspected$", out, re.M)
    assert f">  {line} |     yield durable.sleep(3600)  # inspect: timer" in out
    assert f"   {line - 1} |     durable.set_status" in out  # context around the line
    for name, value in [("order", "'A-1'"), ("items", "3"), ("total", "13"), ("note", "'order A-1: 13'")]:
        assert re.search(rf"^\s+{name}\s+= {re.escape(value)}$", out, re.M), name
    assert "waiting on: sleep(3600.0)" in out
    assert re.search(r"seq 1\s+sleep\(3600\.0\): waiting since .*, fires at .* \(in 59m00s\)$", out, re.M)

    report = json.loads(run("inspect", "ins", "--json")[1])
    frame = report["frames"][-1]
    assert (report["suspended"], report["replay"], frame["function"], frame["lineno"]) == (
        True, "wait", "inspected", line)
    assert frame["locals"] == {"order": "'A-1'", "items": "3", "total": "13", "note": "'order A-1: 13'"}
    assert frame["filename"] == workflows.__file__
    assert {"line": line, "text": "    yield durable.sleep(3600)  # inspect: timer"} in frame["source"]
    assert [(w["seq"], w["state"], w["name"]) for w in report["waiting"]] == [(1, "waiting", "timer")]

    env.advance(3600)  # the timer fired at 3600 s, a minute ago: now waiting for approval
    report = json.loads(run("inspect", "ins", "--json")[1])
    assert report["frames"][-1]["lineno"] == marked("signal")
    assert report["waiting_on"] == "wait_signal('approve', timeout=600.0)"
    assert report["custom_status"] == "{'stage': 'approval'}"
    assert "times out at" in report["waiting"][0]["detail"] and "(in 9m00s)" in report["waiting"][0]["detail"]


def test_inspect_follows_yield_from_into_a_helper(env, run):
    handle = env.start(workflows.uses_helper, "db", workflow_id="uh")
    env.advance(1)
    env.signal(handle, "db-status", "pending")
    env.advance(1)
    code, out, _ = run("inspect", "uh")
    assert code == 0
    caller, helper = marked("caller"), marked("helper")
    assert out.index(f"workflows.py:{caller} in uses_helper") < out.index(f"workflows.py:{helper} in _poll")
    assert re.search(r"^\s+seen\s+= \['pending'\]$", out, re.M) and re.search(r"^\s+attempt\s+= 1$", out, re.M)
    report = json.loads(run("inspect", "uh", "--json")[1])
    outer, inner = report["frames"]
    assert (outer["function"], outer["lineno"], inner["function"], inner["lineno"]) == (
        "uses_helper", caller, "_poll", helper)
    assert outer["locals"] == {"target": "'db'", "prepared": "3"}
    assert inner["locals"] == {"target": "'db'", "tries": "3", "seen": "['pending']", "attempt": "1",
                               "status": "'pending'"}
    assert [(w["seq"], w["command"]) for w in report["waiting"]] == [(2, "wait_signal('db-status')")]


def test_inspect_a_race_a_child_and_a_workflow_not_stepped_yet(env, run):
    env.start(workflows.race_timer, 30, workflow_id="rt")
    env.start(workflows.parent_waiting_on_child, workflow_id="pc")
    env.advance(1)
    env.start(workflows.inspected, "B", 1, workflow_id="fresh")
    race = json.loads(run("inspect", "rt", "--json")[1])
    assert race["waiting_on"] == "any_of(wait_signal('go'), sleep(30.0))"
    assert [(w["seq"], w["state"]) for w in race["waiting"]] == [(0, "waiting"), (1, "waiting")]
    assert "in 29.0s" in race["waiting"][1]["detail"]
    parent = run("inspect", "pc")[1]
    assert re.search(r"seq 0\s+child waits_forever\(\): waiting since .*, child pc/0 is running$", parent, re.M)
    fresh = json.loads(run("inspect", "fresh", "--json")[1])
    assert (fresh["events"], fresh["replay"], fresh["waiting"][0]["state"]) == (0, "schedule", "new")
    assert fresh["frames"][-1]["lineno"] == marked("timer") - 3  # total = yield add(items, 10)


def test_inspect_an_all_of_half_answered(env, run):
    handle = env.start(workflows.approvals, workflow_id="votes")
    env.advance(1)
    env.signal(handle, "alice", "yes")
    env.advance(1)
    report = json.loads(run("inspect", "votes", "--json")[1])
    assert report["frames"][-1]["lineno"] == marked("all_of")
    assert report["waiting_on"] == "all_of(wait_signal('alice'), wait_signal('bob'))"
    assert [(w["seq"], w["name"], w["state"]) for w in report["waiting"]] == [
        (0, "alice", "answered"), (1, "bob", "waiting")]


def test_inspect_a_finished_workflow(env, run):
    env.run(env.start(workflows.arithmetic, 1, workflow_id="done"))
    env.start(workflows.fails, workflow_id="broke")
    env.advance(1)
    code, out, _ = run("inspect", "done")
    assert code == 0
    assert out.splitlines()[-1] == "finished: the workflow returned 104; no frame to show"
    report = json.loads(run("inspect", "done", "--json")[1])
    assert (report["suspended"], report["frames"], report["replay"], report["outcome"]) == (
        False, [], "complete", "returned 104")
    assert run("inspect", "broke")[1].splitlines()[-1] == \
        "finished: the workflow raised KeyError: 'missing thing'; no frame to show"


def test_inspect_and_history_write_nothing_and_run_no_activity(env, run):
    env.start(workflows.inspected, "A-1", 3, workflow_id="ins")
    env.run(env.start(workflows.inline_chain, 300, workflow_id="long"))  # > 256 events: a worker's load packs
    env.advance(60)
    before = {key: env.conn.dump(key) for key in env.conn.keys()}
    calls = list(workflows.CALLS)
    assert calls[0] == ("add", (3, 10)) and len(calls) == 303  # 300 doubles, inline_flaky twice
    for workflow_id in ("ins", "long"):
        for argv in (("inspect",), ("inspect", "--json"), ("history",), ("history", "--json", "--timeline")):
            assert run(*argv, workflow_id)[0] == 0
    assert {key: env.conn.dump(key) for key in env.conn.keys()} == before
    assert workflows.CALLS == calls


def test_inspect_reports_non_determinism_and_missing_code_in_one_line(env, run):
    workflows.MODE["activity"] = "add"
    env.start(workflows.changes_shape, workflow_id="shape")
    env.advance(1)
    workflows.MODE["activity"] = "double"  # "deploy" code that yields something else first
    try:
        for argv in (("inspect", "shape"), ("inspect", "shape", "--json")):
            code, out, err = run(*argv)
            assert (code, out) == (1, "")
            assert err.count("\n") == 1 and err.startswith("durable: workflow 'changes_shape' (shape) is not "
                                                           "deterministic at sequence 0: history recorded activity")
    finally:
        workflows.MODE["activity"] = "add"
    env.conn.hset(env.client.store.meta_key("shape"), "path", "gone_module:changes_shape")
    code, out, err = run("inspect", "shape")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("durable: cannot import module 'gone_module'")


# -- status, result, signal, cancel, errors ---------------------------------------------------------


def test_status_result_signal_and_cancel_json(env, run):
    env.run(env.start(workflows.arithmetic, 1, workflow_id="c1"))
    code, out, _ = run("status", "c1")
    assert code == 0 and out.splitlines()[0] == "c1  arithmetic  completed"
    assert re.search(r"^\s+workflow\s+tests\.workflows:arithmetic$", out, re.M)
    assert json.loads(run("status", "c1", "--json")[1])["status"] == "completed"
    assert run("result", "c1", "--json") == (0, "104\n", "")
    env.start(workflows.fails, workflow_id="f1")
    env.advance(1)
    assert run("result", "f1") == (3, "", "durable: workflow 'f1' failed: KeyError: 'missing thing'\n")
    code, out, err = run("result", "f1", "--json")
    failure = json.loads(out)
    assert (code, failure["status"], failure["error"]["type"]) == (3, "failed", "KeyError")
    assert 'raise KeyError("missing thing")' in failure["error"]["traceback"] and err.count("\n") == 1

    env.start(workflows.compensates, workflow_id="w1")
    env.advance(1)
    code, out, _ = run("signal", "w1", "other", '{"n": 1}', "--json")
    assert (code, json.loads(out)) == (0, {"workflow_id": "w1", "signal": "other", "payload": {"n": 1}, "sent": True})
    code, out, _ = run("cancel", "w1", "--json")
    assert (code, json.loads(out)) == (0, {"workflow_id": "w1", "cancel_requested": True, "status": "running"})
    env.run(env.client.get("w1"))
    assert json.loads(run("cancel", "w1", "--json")[1]) == {
        "workflow_id": "w1", "cancel_requested": False, "status": "completed"}


@pytest.mark.parametrize("argv", [
    ("status", "nope"), ("result", "nope"), ("history", "nope"), ("history", "nope", "--json"),
    ("history", "nope", "--events"), ("inspect", "nope"), ("inspect", "nope", "--json"), ("signal", "nope", "x"),
    ("cancel", "nope"), ("replay", "nope"),
])
def test_an_unknown_id_is_one_line_exit_2_with_a_hint(run, argv):
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert err == "durable: no workflow with id 'nope'; `durable list` shows the ones that exist\n"


def test_usage_errors_are_one_line(run):
    code, out, err = run("list", "--status", "bogus")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("durable list: error: argument --status: invalid choice: 'bogus'")
    assert run("list", "--limit", "0")[0] == 2


def test_unreachable_redis_is_one_line_exit_2(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for argv in (["list"], ["inspect", "x"], ["history", "x"]):
        assert cli.main([*argv, "--url", f"redis://127.0.0.1:{port}/0"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("durable: cannot reach Redis")
