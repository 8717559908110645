"""The command line, against fakeredis (the real-worker paths are in tests/integration)."""

from __future__ import annotations

import json

import pytest

import durable
from durable import cli
from tests.conftest import drain


@pytest.fixture
def run(client, monkeypatch, capsys):
    monkeypatch.setattr(cli, "Client", lambda url=None: client)

    def invoke(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_start_status_result_history_list(run, client):
    code, out, _ = run("start", "tests.workflows:arithmetic", "1", "--id", "c1")
    assert (code, out.strip()) == (0, "c1")
    drain(client, client.get("c1"))
    code, out, _ = run("status", "c1")
    assert code == 0 and "completed" in out and "arithmetic" in out
    assert json.loads(run("status", "c1", "--json")[1])["status"] == "completed"
    assert run("result", "c1") == (0, "104\n", "")
    code, out, _ = run("history", "c1")  # a timeline: header, column titles, started, 3 commands, completed
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 7
    assert lines[0].startswith("c1  arithmetic  completed") and "started arithmetic(1)" in lines[2]
    assert "add(1, 1)" in lines[3] and lines[3].endswith(" 2") and "double(2) [inline]" in lines[4]
    assert "completed" in lines[-1] and lines[-1].endswith(" 104")
    lines = run("history", "c1", "--events")[1].strip().splitlines()  # one line per raw event
    assert len(lines) == 7 and "activity_scheduled" in lines[0] and "tests.workflows:add" in lines[0]
    assert "workflow_completed" in lines[-1]
    assert len(json.loads(run("history", "c1", "--json")[1])) == 7
    code, out, _ = run("list", "--status", "completed")
    assert code == 0 and out.splitlines()[0].split()[0] == "ID" and out.splitlines()[1].split()[0] == "c1"


def test_dotted_path_and_kwargs(run, client):
    code, out, _ = run("start", "tests.workflows.sleeper", "--kwargs", '{"seconds": 0}', "--id", "c2")
    assert code == 0
    assert client.get("c2").describe()["name"] == "sleeper"


def test_errors_are_one_line_and_nonzero(run, client):
    code, out, err = run("status", "nope")
    assert code == 2 and out == "" and err.count("\n") == 1 and "no workflow with id 'nope'" in err
    code, _, err = run("start", "tests.workflows:add", "1")
    assert code == 2 and "not a @durable.workflow" in err
    code, _, err = run("start", "no_such_mod:wf")
    assert code == 2 and "cannot import module 'no_such_mod'" in err
    client.start(durable.registry.resolve("tests.workflows:fails"), workflow_id="f1")
    drain(client, client.get("f1"))
    code, _, err = run("result", "f1")
    assert code == 3 and "KeyError" in err


def test_signal_and_cancel(run, client):
    assert run("start", "tests.workflows:collect_signals", "2", "--id", "sig")[0] == 0
    assert run("signal", "sig", "item", '{"n": 1}')[:2] == (0, "signal 'item' sent to sig\n")
    assert run("signal", "sig", "item", "plain-word")[0] == 0
    drain(client, client.get("sig"))
    assert client.get("sig").result() == [{"n": 1}, "plain-word"]
    code, _, err = run("signal", "sig", "item")
    assert code == 2 and "has already completed" in err
    run("start", "tests.workflows:waits_forever", "--id", "c")
    assert run("cancel", "c")[:2] == (0, "cancellation requested for c\n")
    drain(client, client.get("c"))
    assert run("cancel", "c")[:2] == (0, "c is cancelled: nothing to cancel\n")


def test_replay_is_a_deploy_gate(run, client):
    from tests import workflows

    workflows.MODE["activity"] = "add"
    run("start", "tests.workflows:changes_shape", "--id", "shape")
    run("start", "tests.workflows:waits_forever", "--id", "fine")
    drain_once = durable.Worker(["durable"], connection=client.conn)
    drain_once.work(burst=True)
    code, out, _ = run("replay", "--all")
    assert code == 0 and "2 of 2 workflows replay" in out
    workflows.MODE["activity"] = "double"  # "deploy" code that yields something else first
    try:
        code, out, _ = run("replay", "--all")
        assert code == 1
        assert "MISMATCH shape" in out and "sequence 0" in out and "ok       fine" in out
        assert "1 of 2 workflows replay" in out
        code, out, _ = run("replay", "fine", "--json")
        assert code == 0 and json.loads(out)[0]["ok"] is True
        assert client.get("shape").history()[-1]["type"] == "timer_started"  # replay wrote nothing
    finally:
        workflows.MODE["activity"] = "add"
    code, _, err = run("replay")
    assert code == 2 and "name workflow ids, or pass --all" in err
