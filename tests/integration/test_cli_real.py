"""The operator commands as an operator runs them: ``python -m durable ...`` against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import durable
from tests import workflows

from .conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def durable_cli(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_REDIS_URL", "DURABLE_SECRET")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "durable", *argv, "--url", url], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def step_until_idle(client: durable.Client) -> None:
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)


def test_inspect_and_history_in_a_subprocess(client, redis_url):
    client.start(workflows.inspected, "A-1", 3, workflow_id="ins")
    step_until_idle(client)  # the activity ran; the workflow sleeps for an hour
    assert client.get("ins").history()[-1]["type"] == "timer_started"
    line = next(n for n, text in enumerate(open(workflows.__file__), 1) if text.rstrip().endswith("# inspect: timer"))

    done = durable_cli(redis_url, "inspect", "ins")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert f"tests/workflows.py:{line} in inspected" in done.stdout
    assert f">  {line} |     yield durable.sleep(3600)" in done.stdout
    assert "total = 13" in done.stdout and "note  = 'order A-1: 13'" in done.stdout
    assert "waiting on: sleep(3600.0)" in done.stdout

    report = json.loads(durable_cli(redis_url, "inspect", "ins", "--json").stdout)
    assert report["frames"][-1]["lineno"] == line and report["frames"][-1]["locals"]["total"] == "13"

    history = durable_cli(redis_url, "history", "ins")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert "started inspected('A-1', 3)" in lines[2]
    assert "add(3, 10)" in lines[3] and lines[3].endswith(" 13")
    assert "sleep 1h00m" in lines[4] and "(waiting)" in lines[4]

    missing = durable_cli(redis_url, "inspect", "nope")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == "durable: no workflow with id 'nope'; `durable list` shows the ones that exist\n"


def test_inspect_in_a_subprocess_exits_1_on_non_determinism(client, redis_url):
    workflows.MODE["activity"] = "double"  # this process records double(1); the subprocess's code yields add
    try:
        client.start(workflows.changes_shape, workflow_id="shape")
        step_until_idle(client)
    finally:
        workflows.MODE["activity"] = "add"
    done = durable_cli(redis_url, "inspect", "shape")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1 and "is not deterministic at sequence 0" in done.stderr
