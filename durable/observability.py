"""Logs and traces that say which workflow, run, step and attempt they come from.

A worker interleaves the steps of many workflows, so a log line is useful only
if it names the workflow, the run, the sequence number and the attempt it
belongs to. Formatting ids into every message cannot reach the user's own
messages, so instead each step and each activity attempt sets a *scope* in a
context variable, and ``ContextFilter`` copies it onto every record emitted
meanwhile, durable's and the user's alike (``workflow_id``, ``workflow``,
``run_id``, ``seq``, ``attempt``, ``activity``; None outside a step). Handlers
then show it as text or as JSON lines: ``durable worker --log-format json``,
or ``configure_logging`` for a worker started from Python.

The job functions (``durable.runtime``) run each ``Step`` inside a ``StepScope``;
``run_attempt`` runs each activity attempt inside an ``AttemptScope``; ``Step``
reports what it loaded, what it decided and how the run ended through the
small functions below, so that the logic lives here and the hot modules only
gain a call each.

OpenTelemetry is optional. When ``opentelemetry-api`` is importable (``OTEL``),
each step is a span ``durable.step <workflow>`` and each activity attempt a
child span ``durable.activity <activity>``, with status ERROR when the step
raised, held or failed the workflow, or the attempt failed; they go wherever
the application's tracer provider sends them (nowhere until it sets one).
When it is not importable, a scope costs one context-variable set and reset
and a flag check.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from .context import ActivityInfo

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # optional: without it, scopes only set the logging context
    OTEL = False
else:
    OTEL = True

if TYPE_CHECKING:
    from .activities import AttemptOutcome
    from .decision import Decision

__all__ = [
    "ContextFilter", "JsonFormatter", "TextFormatter", "configure_logging", "StepScope", "AttemptScope",
    "current", "tracing", "loaded", "decided", "held", "ended", "FIELDS", "OTEL", "TEXT_FORMAT", "LOG_FORMATS",
]

FIELDS = ("workflow_id", "workflow", "run_id", "seq", "attempt", "activity")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s%(durable_context)s"
LOG_FORMATS = ("text", "json")

step_log = logging.getLogger("durable.runtime")
activity_log = logging.getLogger("durable.activity")

# The scope of the step or attempt running in this thread (or task), if any.
_scope: ContextVar[StepScope | AttemptScope | None] = ContextVar("durable_log_scope", default=None)
_tracer: Any = _otel_trace.get_tracer("durable") if OTEL else None  # a proxy: follows the provider set later
# Providers that make no-op spans: with only the API installed, spans would cost ~5 us a scope for nothing.
_IDLE: tuple[type, ...] = (_otel_trace.ProxyTracerProvider, _otel_trace.NoOpTracerProvider) if OTEL else ()
_OUTCOMES = {"activity_completed": "completed", "activity_retrying": "retrying", "activity_failed": "failed"}


def tracing() -> bool:
    """Whether scopes make spans: ``opentelemetry-api`` is importable and the application set a
    tracer provider (checked per scope, so a provider set after import counts)."""
    return OTEL and not isinstance(_otel_trace.get_tracer_provider(), _IDLE)


def current() -> StepScope | AttemptScope | None:
    """The scope log records are attributed to right now (None outside durable's jobs)."""
    return _scope.get()


# -- logging ----------------------------------------------------------------------------------------


def annotate(record: logging.LogRecord) -> None:
    """Put the current scope's fields on ``record``, keeping any a caller passed with ``extra=``."""
    values = record.__dict__
    scope = _scope.get()
    if scope is None:
        for name in FIELDS:
            values.setdefault(name, None)
    else:
        values.setdefault("workflow_id", scope.workflow_id)
        values.setdefault("workflow", scope.workflow)
        values.setdefault("run_id", scope.run_id)
        values.setdefault("seq", scope.seq)
        values.setdefault("attempt", scope.attempt)
        values.setdefault("activity", scope.activity)
    if "durable_context" not in values:
        shown = [f"{name}={values[name]}" for name in FIELDS if name != "workflow" and values[name] is not None]
        values["durable_context"] = f" [{' '.join(shown)}]" if shown else ""


class ContextFilter(logging.Filter):
    """Adds ``workflow_id``, ``workflow``, ``run_id``, ``seq``, ``attempt``, ``activity`` (None
    outside a step) and ``durable_context`` (those as ``" [k=v ...]"``, or ``""``) to every record.

    Put it on a *handler*: a filter on a logger sees only records created on that
    very logger, not those of its children (nor the user's loggers). It never drops
    a record. It must run in the thread that logged (the scope is a context
    variable): on a ``QueueHandler``, not behind its ``QueueListener``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        annotate(record)
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` by default: the message, then the ids in brackets when there are any."""

    def __init__(self, fmt: str | None = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        if "durable_context" not in record.__dict__:  # no ContextFilter on this handler
            annotate(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
    scope's fields and ``exc`` (the formatted exception, or null). Standard library only."""

    def format(self, record: logging.LogRecord) -> str:
        if "workflow_id" not in record.__dict__:  # no ContextFilter on this handler
            annotate(record)
        values = record.__dict__
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            doc[name] = values.get(name)
        exc = None
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = f"{exc}\n{self.formatStack(record.stack_info)}" if exc else self.formatStack(record.stack_info)
        doc["exc"] = exc
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(level: int | str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) through the root logger, with ``ContextFilter`` and the
    ``text`` or ``json`` formatter. Like ``logging.basicConfig``, it changes nothing
    when the root logger has handlers already; returns the handler it made."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"the log format is one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
    return handler


# -- scopes ------------------------------------------------------------------------------------------


class _Fields:
    """What every scope tells a log record."""

    __slots__ = ()
    workflow_id: str
    workflow: str | None
    run_id: str
    seq: int | None
    attempt: int | None
    activity: str | None


class StepScope(_Fields):
    """One job's step: ``with StepScope(workflow_id, run_id, "advance"): Step(...).run()``.

    ``seq`` and ``attempt`` are the job's own (the activity attempt or the timer it
    runs), None for ``advance``. ``Step`` fills in the rest as it goes (``loaded``,
    ``decided``, ``held``, ``ended``); the span gets them as attributes.
    """

    __slots__ = ("workflow_id", "workflow", "run_id", "seq", "attempt", "activity", "kind", "history", "cache_hit",
                 "decision", "scheduled", "error_type", "problem", "_token", "_span", "_otel_token", "_started")

    def __init__(self, workflow_id: str, run_id: str, kind: str, seq: int | None = None,
                 attempt: int | None = None) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.kind = kind
        self.seq = seq
        self.attempt = attempt
        self.workflow: str | None = None
        self.activity: str | None = None
        self.history: int | None = None
        self.cache_hit: bool | None = None
        self.decision: str | None = None
        self.scheduled = 0  # new commands recorded by this step
        self.error_type: str | None = None
        self.problem: str | None = None  # why the step held the workflow or failed it
        self._span: Any = None
        self._otel_token: Any = None
        self._token: Token[StepScope | AttemptScope | None] | None = None
        self._started = 0.0

    def __enter__(self) -> StepScope:
        self._started = time.perf_counter()
        self._token = _scope.set(self)
        if OTEL and tracing():
            attributes: dict[str, Any] = {"workflow.id": self.workflow_id, "run.id": self.run_id,
                                          "job.kind": self.kind}
            if self.seq is not None:
                attributes["job.seq"] = self.seq
            if self.attempt is not None:
                attributes["job.attempt"] = self.attempt
            self._span = _tracer.start_span("durable.step", attributes=attributes)
            self._otel_token = _otel_context.attach(_otel_trace.set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if step_log.isEnabledFor(logging.DEBUG):
                step_log.debug("step %s: %s job on a history of %s events (%s), %d new commands, ended on "
                               "decision %s, %.2f ms", "raised" if exc is not None else "done", self.kind,
                               self.history, "cached" if self.cache_hit else "replayed", self.scheduled,
                               self.decision, (time.perf_counter() - self._started) * 1000)
            if self._span is not None:
                _end_span(self._span, self._otel_token, exc, self.problem)
        finally:
            assert self._token is not None
            _scope.reset(self._token)


class AttemptScope(_Fields):
    """One activity attempt, inline or queued: the step's scope narrowed to the activity's
    ``seq``, ``attempt`` and name, and a span that is a child of the step's."""

    __slots__ = ("workflow_id", "workflow", "run_id", "seq", "attempt", "activity", "_token", "_span",
                 "_otel_token", "_started", "_failed", "_traced")

    def __init__(self, info: ActivityInfo) -> None:
        parent = _scope.get()
        self.workflow_id = info.workflow_id
        self.run_id = info.run_id
        self.seq: int | None = info.seq
        self.attempt: int | None = info.attempt
        self.activity: str | None = info.activity
        self.workflow: str | None = parent.workflow if parent is not None else None
        # Within a step, trace the attempt if the step is traced (asking OpenTelemetry costs an
        # environment lookup per attempt); alone, ask.
        self._traced = getattr(parent, "_span", None) is not None if parent is not None else None
        self._span: Any = None
        self._otel_token: Any = None
        self._token: Token[StepScope | AttemptScope | None] | None = None
        self._started = 0.0
        self._failed: str | None = None

    def __enter__(self) -> AttemptScope:
        self._started = time.perf_counter()
        self._token = _scope.set(self)
        if OTEL and (self._traced if self._traced is not None else tracing()):
            self._span = _tracer.start_span(f"durable.activity {self.activity}", attributes={
                "workflow.id": self.workflow_id, "run.id": self.run_id, "activity.name": self.activity or "",
                "activity.seq": self.seq if self.seq is not None else -1,
                "activity.attempt": self.attempt if self.attempt is not None else 0,
            })
            self._otel_token = _otel_context.attach(_otel_trace.set_span_in_context(self._span))
        if activity_log.isEnabledFor(logging.DEBUG):
            activity_log.debug("activity attempt started")
        return self

    def ended(self, outcome: AttemptOutcome) -> AttemptOutcome:
        """Log and trace what the attempt produced; returns ``outcome``."""
        took = (time.perf_counter() - self._started) * 1000
        event = outcome.events[0] if outcome.events else None
        if outcome.missing_code is not None:
            result = "missing_code"  # the step says why it holds the workflow
        else:
            result = _OUTCOMES.get(event.type, event.type) if event is not None else "none"
        error: dict[str, Any] = getattr(event, "error", None) or {}
        if result == "completed":
            if activity_log.isEnabledFor(logging.DEBUG):
                activity_log.debug("activity attempt completed in %.2f ms", took)
        elif result == "retrying":
            delay = float(getattr(event, "retry_at", 0.0)) - float(getattr(event, "time", 0.0))
            activity_log.warning("activity attempt failed after %.2f ms (%s: %s); retrying in %.3g s", took,
                                 error.get("type"), error.get("message"), delay)
        elif result == "failed":
            activity_log.error("activity attempt failed after %.2f ms (%s: %s) and is not retried: the workflow "
                               "gets ActivityFailed", took, error.get("type"), error.get("message"))
        if self._span is not None:
            self._span.set_attribute("activity.outcome", result)
            if error:
                self._span.set_attribute("error.type", str(error.get("type")))
                self._span.add_event("exception", {
                    "exception.type": str(error.get("type")), "exception.message": str(error.get("message")),
                    "exception.stacktrace": str(error.get("traceback") or ""),
                })
                self._failed = f"{error.get('type')}: {error.get('message')}"
            elif outcome.missing_code is not None:
                self._failed = f"cannot import the activity: {outcome.missing_code}"
        return outcome

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._span is not None:
                _end_span(self._span, self._otel_token, exc, self._failed)
        finally:
            assert self._token is not None
            _scope.reset(self._token)


def _end_span(span: Any, token: Any, exc: BaseException | None, problem: str | None) -> None:
    """Close a span: ERROR with the exception when the code raised, ERROR with ``problem``
    when it reported one, else left unset (OpenTelemetry's advice for success)."""
    try:
        if exc is not None:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        elif problem is not None:
            span.set_status(Status(StatusCode.ERROR, problem))
    finally:
        _otel_context.detach(token)
        span.end()


# -- what Step reports -------------------------------------------------------------------------------


def _step() -> StepScope | None:
    scope = _scope.get()
    return scope if isinstance(scope, StepScope) else None


def loaded(workflow: str | None, history: int, cache_hit: bool) -> None:
    """A round of the step loaded the run: its workflow's name, history length, whether
    the generator came from the cache. Starts the round afresh (a lost race retries)."""
    scope = _step()
    if scope is None:
        return
    scope.workflow, scope.history, scope.cache_hit = workflow, history, cache_hit
    scope.decision = scope.error_type = scope.problem = None
    scope.scheduled = 0
    if scope._span is not None:
        if workflow:
            scope._span.update_name(f"durable.step {workflow}")
            scope._span.set_attribute("workflow.name", workflow)
        scope._span.set_attribute("history.length", history)
        scope._span.set_attribute("cache.hit", cache_hit)


def decided(decision: Decision) -> None:
    """The engine's decision (``schedule``, ``wait``, ``complete``, ``fail``, ...): a step
    decides until it waits or ends, so the last one is what the step ended on."""
    scope = _step()
    if scope is None:
        return
    scope.decision = decision.kind
    scope.scheduled += len(decision.new)
    scope.error_type = decision.error.type if decision.error is not None else None
    if decision.kind == "fail":
        scope.problem = f"the workflow failed: {scope.error_type}"
    if scope._span is not None:
        scope._span.set_attribute("decision.kind", decision.kind)
        scope._span.set_attribute("commands.scheduled", scope.scheduled)
        if scope.error_type:
            scope._span.set_attribute("error.type", scope.error_type)


def held(reason: str) -> None:
    """The step holds the workflow (unreadable history, code that does not load or no longer
    replays, an activity no worker here can import): logged as an error, the span ERROR."""
    step_log.error("workflow held: %s", reason)
    scope = _step()
    if scope is None:
        return
    scope.decision = "held"
    scope.problem = f"held: {reason}"
    if scope._span is not None:
        scope._span.set_attribute("decision.kind", "held")


def ended(status: str) -> None:
    """The step committed the end of the run: ``completed``, ``failed``, ``cancelled``, or
    ``continued`` as a new run."""
    scope = _step()
    if status == "failed":
        # No error type: the code returned, but its result could not be stored (Step turned it into a failure).
        step_log.warning("workflow failed (%s)", scope.error_type if scope is not None and scope.error_type
                         else "see durable status")
        if scope is not None and scope.problem is None:
            scope.problem = "the workflow failed"
    elif status == "continued":
        step_log.info("workflow continued as new")
    else:
        step_log.info("workflow %s", status)
    if scope is not None and scope._span is not None:
        scope._span.set_attribute("workflow.status", status)
