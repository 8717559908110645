"""``durable worker --log-format json`` on a real redis-server: every line is JSON, with the ids."""

from __future__ import annotations

import json

import pytest

import durable
from tests import workflows

from .conftest import Workers, durable_worker_argv, wait_for

pytestmark = pytest.mark.integration


def test_json_log_lines_carry_the_workflow_id(workers: Workers, client: durable.Client) -> None:
    proc = workers.start(durable_worker_argv(workers.url, "--log-format", "json", "--log-level", "INFO"))
    handle = client.start(workflows.observed, "bo", workflow_id="json-logs")
    assert handle.result(timeout=30) == ("HELLO BO", "bo-2")
    run_id = handle.describe()["run_id"]

    def finished_line() -> list[dict]:
        docs = [json.loads(line) for line in proc.log.read_text().splitlines() if line.strip()]
        return docs if any(d["message"] == "workflow completed" for d in docs) else []

    docs = wait_for(finished_line, 10, "the worker to log the end of the workflow")  # every line parsed
    greeting = [d for d in docs if d["logger"] == "myapp" and d["message"] == "greeting bo"]
    assert len(greeting) == 1
    assert (greeting[0]["workflow_id"], greeting[0]["run_id"], greeting[0]["seq"], greeting[0]["attempt"],
            greeting[0]["activity"]) == ("json-logs", run_id, 0, 1, "tests.workflows:greet")
    retry = [d for d in docs if d["logger"] == "durable.activity" and d["level"] == "WARNING"]
    assert [(d["workflow_id"], d["seq"], d["attempt"]) for d in retry] == [("json-logs", 2, 1)]
    assert any(d["logger"].startswith("rq.") and d["workflow_id"] is None for d in docs)  # RQ's lines too
