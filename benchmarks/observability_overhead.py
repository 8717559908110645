"""What the logging context and the spans add: ``python -m benchmarks.observability_overhead``.

Times a step scope (``StepScope`` with ``loaded`` and ``decided``, as ``Step``
reports them) and an activity attempt scope (``AttemptScope`` and ``ended``),
in process, with no Redis: with OpenTelemetry off (as if ``opentelemetry-api``
were not installed), with the API and no tracer provider, and, when
``opentelemetry-sdk`` is installed, with an SDK provider and an in-memory
exporter. Logging is at INFO, as ``durable worker`` runs. Best of 7 repetitions.
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable

from durable import observability
from durable.activities import AttemptOutcome
from durable.context import ActivityInfo
from durable.decision import Decision

INFO = ActivityInfo("wf", "run", 3, 1, "module:function")
OUTCOME = AttemptOutcome([])
DECISION = Decision("wait")


def step() -> None:
    with observability.StepScope("wf", "run", "activity", 3, 1):
        observability.loaded("flow", 10, True)
        observability.decided(DECISION)


def attempt() -> None:
    with observability.AttemptScope(INFO) as scope:
        scope.ended(OUTCOME)


def best(fn: Callable[[], None], number: int = 20000, repeat: int = 7) -> float:
    """Microseconds per call, the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def report(label: str, number: int = 20000) -> None:
    print(f"{label:<48} step {best(step, number):7.2f} µs   attempt {best(attempt, number):7.2f} µs")


def main() -> None:
    logging.basicConfig(level="INFO")
    installed = observability.OTEL
    observability.OTEL = False
    report("OpenTelemetry off (opentelemetry-api absent)")
    observability.OTEL = installed
    if not installed:
        print("opentelemetry-api is not installed: pip install -e '.[otel]' opentelemetry-sdk for the rest")
        return
    report("opentelemetry-api, no tracer provider set")
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        print("opentelemetry-sdk is not installed: no figure with spans")
        return
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    report("SDK tracer provider, in-memory exporter", number=2000)  # fewer: the exporter keeps every span
    exporter.clear()


if __name__ == "__main__":
    main()
