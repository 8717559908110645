"""Logs carry the workflow, run, seq and attempt they come from; OpenTelemetry spans when installed."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rq import Queue

import durable
from durable import observability
from durable.context import ActivityInfo
from durable.observability import AttemptScope, ContextFilter, JsonFormatter, StepScope, TextFormatter
from tests import workflows
from tests.conftest import drain

GREET, SHOUT, FLAKY = (f"tests.workflows:{name}" for name in ("greet", "shout", "fails_first_time"))


class Collect(logging.Handler):
    """A handler as a worker would have one: ContextFilter on it, every record kept."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    handler = Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_observed(client: durable.Client, workflow_id: str = "obs") -> tuple[durable.WorkflowHandle, str]:
    handle = client.start(workflows.observed, "ann", workflow_id=workflow_id)
    run_id = handle.describe()["run_id"]
    assert drain(client, handle) == "completed"
    assert handle.result() == ("HELLO ANN", "ann-2")
    return handle, run_id


def ids(record: logging.LogRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in ("workflow_id", "run_id", "seq", "attempt", "activity"))


# -- logging ---------------------------------------------------------------------------------------


def test_the_applications_records_inside_activities_carry_the_attempt(client, records):
    _, run_id = run_observed(client)
    mine = [(r.getMessage(), ids(r)) for r in records if r.name == "myapp"]
    assert mine == [
        ("greeting ann", ("obs", run_id, 0, 1, GREET)),  # a queued activity
        ("shouting hello ann", ("obs", run_id, 1, 1, SHOUT)),  # an inline one, inside the step
        ("trying ann", ("obs", run_id, 2, 1, FLAKY)),
        ("trying ann", ("obs", run_id, 2, 2, FLAKY)),  # the retry: same seq, next attempt
    ]
    assert all(r.workflow == "observed" for r in records if r.name == "myapp")


def test_durables_own_records_carry_the_ids_instead_of_formatting_them(client, records):
    _, run_id = run_observed(client)
    retrying = [r for r in records if r.name == "durable.activity" and r.levelno == logging.WARNING]
    assert len(retrying) == 1
    assert ids(retrying[0]) == ("obs", run_id, 2, 1, FLAKY)
    assert "ConnectionError: ann: attempt 1 always fails" in retrying[0].getMessage()
    assert "obs" not in retrying[0].getMessage()  # the ids travel as attributes

    done = [r for r in records if r.name == "durable.runtime" and r.getMessage() == "workflow completed"]
    assert len(done) == 1 and done[0].levelno == logging.INFO
    # the step was the job of attempt 2 of seq 2; the records of a step carry its job's seq and attempt
    assert ids(done[0]) == ("obs", run_id, 2, 2, None)

    steps = [r for r in records if r.name == "durable.runtime" and r.getMessage().startswith("step done")]
    assert len(steps) == 4  # advance, greet's job (shout inline), fails_first_time's two attempts
    assert [(r.seq, r.attempt) for r in steps] == [(None, None), (0, 1), (2, 1), (2, 2)]
    assert {(r.workflow_id, r.run_id) for r in steps} == {("obs", run_id)}


def test_records_outside_a_step_have_empty_fields(client, records):
    run_observed(client)
    outside = [r for r in records if r.name.startswith("rq.worker") and "started with PID" in r.getMessage()]
    assert outside, "RQ's worker logs its start, outside any step"
    assert all(ids(r) == (None,) * 5 and r.durable_context == "" for r in outside)
    assert observability.current() is None  # nothing leaks out of the scopes


def test_ids_passed_with_extra_are_kept(records):
    logging.getLogger("durable.worker").warning("recovering", extra={"workflow_id": "wf-9", "run_id": "r9"})
    (record,) = [r for r in records if r.getMessage() == "recovering"]
    assert ids(record) == ("wf-9", "r9", None, None, None)
    assert record.durable_context == " [workflow_id=wf-9 run_id=r9]"


def test_the_recovery_of_a_dead_workers_job_names_its_workflow(client, records):
    handle = client.start(workflows.arithmetic, 1, workflow_id="lost")
    queue = Queue("durable", connection=client.conn)
    job = queue.jobs[0]
    queue.remove(job)  # as if a worker took it, leased it, and died
    client.store.hold_leases([job.id], ttl=0.01)
    time.sleep(0.05)
    assert durable.Worker(["durable"], connection=client.conn, lease_ttl=1).recover() == 1
    (recovered,) = [r for r in records if r.getMessage().startswith("recovering durable.runtime.advance")]
    assert recovered.levelno == logging.WARNING and "its worker stopped renewing the lease" in recovered.getMessage()
    assert ids(recovered) == ("lost", handle.describe()["run_id"], None, None, None)


def test_workflow_failure_and_activity_failure_are_logged(client, records):
    failing = client.start(workflows.fails, workflow_id="bad")
    assert drain(client, failing) == "failed"
    catching = client.start(workflows.catches_failure, workflow_id="catch")
    assert drain(client, catching) == "completed"
    unstorable = client.start(workflows.not_a_result, workflow_id="lock")  # returns, but cannot be stored
    assert drain(client, unstorable) == "failed"
    failed = [r for r in records if r.getMessage().startswith("workflow failed")]
    assert [(r.workflow_id, r.levelno, r.getMessage()) for r in failed] == [
        ("bad", logging.WARNING, "workflow failed (KeyError)"),
        ("lock", logging.WARNING, "workflow failed (see durable status)"),
    ]
    gave_up = [r for r in records if r.name == "durable.activity" and r.levelno == logging.ERROR]
    assert [(r.workflow_id, r.seq, r.attempt) for r in gave_up] == [("catch", 0, 2)]
    assert "is not retried" in gave_up[0].getMessage()


def test_a_held_workflow_is_logged_as_an_error_with_its_ids(client, records):
    handle = client.start(workflows.arithmetic, 1, workflow_id="gone")
    client.store.set_fields("gone", {"path": "no_such_module_xyz:flow"})
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)
    (held,) = [r for r in records if r.getMessage().startswith("workflow held:")]
    assert held.levelno == logging.ERROR and held.workflow_id == "gone"
    assert held.run_id == handle.describe()["run_id"] and "no_such_module_xyz" in held.getMessage()


def test_json_lines_parse_and_have_the_fields(client, records):
    _, run_id = run_observed(client)
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in records]
    docs = [json.loads(line) for line in lines]
    assert all("\n" not in line for line in lines)
    assert all(set(doc) == {"ts", "level", "logger", "message", "workflow_id", "workflow", "run_id", "seq",
                            "attempt", "activity", "exc"} for doc in docs)
    greeting = next(doc for doc in docs if doc["message"] == "greeting ann")
    assert greeting | {"ts": None} == {
        "ts": None, "level": "INFO", "logger": "myapp", "message": "greeting ann", "workflow_id": "obs",
        "workflow": "observed", "run_id": run_id, "seq": 0, "attempt": 1, "activity": GREET, "exc": None,
    }
    assert greeting["ts"].endswith("Z") and greeting["ts"][:4].isdigit()


def test_json_carries_the_exception_and_needs_no_filter():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())  # no ContextFilter: the formatter reads the scope itself
    log = logging.getLogger("myapp.json-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        with StepScope("wf-1", "run-1", "activity", 4, 2), AttemptScope(ActivityInfo("wf-1", "run-1", 4, 2, "m:f")):
            try:
                raise ValueError("bad input")
            except ValueError:
                log.exception("could not parse")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["workflow_id"], inside["run_id"], inside["seq"], inside["attempt"], inside["activity"]) == (
        "wf-1", "run-1", 4, 2, "m:f")
    assert inside["level"] == "ERROR" and "ValueError: bad input" in inside["exc"] and "Traceback" in inside["exc"]
    assert outside["workflow_id"] is None and outside["exc"] is None


def test_text_format_appends_the_ids():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter("%(levelname)s %(message)s%(durable_context)s"))
    log = logging.getLogger("myapp.text-test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with StepScope("wf-2", "run-2", "advance"):
            log.info("in the step")
            with AttemptScope(ActivityInfo("wf-2", "run-2", 0, 1, "m:g")):
                log.info("in the activity")
        log.info("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert stream.getvalue().splitlines() == [
        "INFO in the step [workflow_id=wf-2 run_id=run-2]",
        "INFO in the activity [workflow_id=wf-2 run_id=run-2 seq=0 attempt=1 activity=m:g]",
        "INFO outside",
    ]


def test_configure_logging_installs_the_filter_and_formatter(monkeypatch):
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    stream = io.StringIO()
    handler = observability.configure_logging("info", "json", stream)
    assert logging.root.handlers == [handler] and logging.root.level == logging.INFO
    with StepScope("wf-3", "run-3", "timer", 7):
        logging.getLogger("myapp").info("tick")
    doc = json.loads(stream.getvalue())
    assert (doc["message"], doc["workflow_id"], doc["seq"]) == ("tick", "wf-3", 7)
    with pytest.raises(ValueError, match="text, json"):
        observability.configure_logging("info", "xml")


# -- OpenTelemetry ---------------------------------------------------------------------------------


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An SDK tracer provider with the in-memory exporter, for this test only: the global
    provider can be set once per process, and later tests should not pay for spans."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is in the dev extra")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(observability, "_tracer", provider.get_tracer("durable"))
    yield memory
    provider.shutdown()


def test_spans_follow_the_global_provider_an_application_sets_after_importing_durable():
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is in the dev extra")
    code = """if True:
        import json
        from durable import observability  # a worker imports durable before the app sets its provider
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        with observability.StepScope("wf", "run", "advance"):
            pass  # no provider yet: no span
        provider = TracerProvider()
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)
        with observability.StepScope("wf", "run", "advance"):
            observability.loaded("flow", 0, False)
        print(json.dumps([s.name for s in memory.get_finished_spans()]))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["durable.step flow"]


def test_spans_per_step_and_per_activity_attempt(client, spans):
    from opentelemetry.trace import StatusCode

    _, run_id = run_observed(client)
    finished = spans.get_finished_spans()
    steps = [s for s in finished if s.name.startswith("durable.step")]
    attempts = [s for s in finished if s.name.startswith("durable.activity")]
    assert len(steps) + len(attempts) == len(finished)

    assert [(s.name, s.attributes["activity.seq"], s.attributes["activity.attempt"],
             s.attributes["activity.outcome"], s.status.status_code) for s in attempts] == [
        (f"durable.activity {GREET}", 0, 1, "completed", StatusCode.UNSET),
        (f"durable.activity {SHOUT}", 1, 1, "completed", StatusCode.UNSET),
        (f"durable.activity {FLAKY}", 2, 1, "retrying", StatusCode.ERROR),
        (f"durable.activity {FLAKY}", 2, 2, "completed", StatusCode.UNSET),
    ]
    failed = attempts[2]
    assert failed.attributes["error.type"] == "ConnectionError"
    assert "attempt 1 always fails" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]
    assert failed.events[0].attributes["exception.type"] == "ConnectionError"
    assert all("error.type" not in s.attributes for s in attempts if s is not failed)

    assert [s.name for s in steps] == ["durable.step observed"] * 4
    assert [(s.attributes["job.kind"], s.attributes.get("job.seq"), s.attributes.get("job.attempt"))
            for s in steps] == [("advance", None, None), ("activity", 0, 1), ("activity", 2, 1), ("activity", 2, 2)]
    for step in steps:
        assert step.attributes["workflow.id"] == "obs" and step.attributes["run.id"] == run_id
        assert step.attributes["workflow.name"] == "observed"
        assert isinstance(step.attributes["history.length"], int)
        assert isinstance(step.attributes["cache.hit"], bool)
        assert step.status.status_code == StatusCode.UNSET  # a retried attempt is not a failed step
    assert [s.attributes["decision.kind"] for s in steps] == ["wait", "wait", "wait", "complete"]
    assert steps[0].attributes["history.length"] == 0 and steps[0].attributes["commands.scheduled"] == 1
    assert steps[-1].attributes["workflow.status"] == "completed"

    # each attempt is a child of the step that ran it; the inline one of the queued one's step
    parent = {a.name + str(a.attributes["activity.attempt"]): a.parent.span_id for a in attempts}
    by_id = {s.context.span_id: s for s in steps}
    assert by_id[parent[f"durable.activity {GREET}1"]] is steps[1]
    assert by_id[parent[f"durable.activity {SHOUT}1"]] is steps[1]
    assert by_id[parent[f"durable.activity {FLAKY}1"]] is steps[2]
    assert by_id[parent[f"durable.activity {FLAKY}2"]] is steps[3]
    assert all(a.context.trace_id == by_id[a.parent.span_id].context.trace_id for a in attempts)


def test_a_failed_or_held_workflow_makes_its_step_span_an_error(client, spans):
    from opentelemetry.trace import StatusCode

    failing = client.start(workflows.fails, workflow_id="bad")
    assert drain(client, failing) == "failed"
    unstorable = client.start(workflows.not_a_result, workflow_id="lock")
    assert drain(client, unstorable) == "failed"
    client.start(workflows.arithmetic, 1, workflow_id="gone")
    client.store.set_fields("gone", {"path": "no_such_module_xyz:flow"})
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)

    steps = [s for s in spans.get_finished_spans() if s.name.startswith("durable.step")]
    bad = [s for s in steps if s.attributes["workflow.id"] == "bad"]
    assert [s.attributes["decision.kind"] for s in bad] == ["wait", "fail"]
    assert bad[-1].status.status_code == StatusCode.ERROR and bad[-1].attributes["error.type"] == "KeyError"
    assert bad[-1].attributes["workflow.status"] == "failed"
    assert bad[0].status.status_code == StatusCode.UNSET
    lock = [s for s in steps if s.attributes["workflow.id"] == "lock"][-1]
    assert lock.attributes["decision.kind"] == "complete" and lock.attributes["workflow.status"] == "failed"
    assert lock.status.status_code == StatusCode.ERROR
    (gone,) = [s for s in steps if s.attributes["workflow.id"] == "gone"]
    assert gone.attributes["decision.kind"] == "held" and gone.status.status_code == StatusCode.ERROR
    assert "no_such_module_xyz" in (gone.status.description or "")


def test_a_step_that_raises_records_the_exception(spans):
    from opentelemetry.trace import StatusCode

    with pytest.raises(RuntimeError), StepScope("wf-4", "run-4", "advance"):
        raise RuntimeError("redis went away")
    (span,) = spans.get_finished_spans()
    assert span.name == "durable.step" and span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError" and [e.name for e in span.events] == ["exception"]
    assert observability.current() is None


@pytest.fixture
def spans_if_installed(request: pytest.FixtureRequest) -> Any:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return None
    return request.getfixturevalue("spans")


def test_without_opentelemetry_nothing_breaks_and_logs_still_carry_ids(client, records, spans_if_installed,
                                                                       monkeypatch):
    monkeypatch.setattr(observability, "OTEL", False)  # as if opentelemetry-api were not importable
    _, run_id = run_observed(client)
    if spans_if_installed is not None:
        assert spans_if_installed.get_finished_spans() == ()
    assert [ids(r)[:4] for r in records if r.name == "myapp"][0] == ("obs", run_id, 0, 1)


def test_with_the_api_but_no_tracer_provider_no_spans_are_made(spans, monkeypatch):
    from opentelemetry import trace

    assert observability.tracing()  # the SDK provider of the spans fixture
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())  # none set
    assert not observability.tracing()
    with StepScope("wf-5", "run-5", "advance") as step, AttemptScope(ActivityInfo("wf-5", "run-5", 0, 1, "m:h")):
        assert observability.current() is not step  # the attempt narrows the step's scope
    assert spans.get_finished_spans() == ()
