"""Azure Durable Functions (Python) replay engine, offline: the orchestrator handle that the
Functions host calls with the orchestration's history as JSON, on a synthesized history
of N completed activities.

The history has the shape the host sends: for each activity ``TaskScheduled``,
then ``OrchestratorCompleted``/``OrchestratorStarted`` (one replay episode per
activity) and ``TaskCompleted``. The figure includes parsing that JSON and its
timestamps, as the real handle does on every episode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..common import require, version

_TS = "2024-01-01T00:00:00.000000Z"


def label() -> str:
    return f"Azure Durable Functions {version('azure-functions-durable')} orchestrator (offline, incl. JSON parse)"


def _event(kind: int, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": kind, "EventId": event_id, "IsPlayed": False, "Timestamp": _TS, **fields}


def replayer(n: int) -> Callable[[], Any]:
    """A function that replays an orchestration of ``n`` completed activities once."""
    require("azure.durable_functions", "azure-functions-durable")
    import azure.durable_functions as df
    from azure.durable_functions.models.history import HistoryEventType as T

    def orchestrator(context: Any) -> Any:
        count = context.get_input()
        result = None
        for i in range(count):
            result = yield context.call_activity("Act", i)
        return result

    handle = df.Orchestrator.create(orchestrator)
    history = [_event(T.ORCHESTRATOR_STARTED),
               _event(T.EXECUTION_STARTED, Input=json.dumps(n + 1), Name="bench", Version="")]
    for i in range(n):
        history += [_event(T.TASK_SCHEDULED, i, Name="Act", Input=json.dumps(i)),
                    _event(T.ORCHESTRATOR_COMPLETED), _event(T.ORCHESTRATOR_STARTED),
                    _event(T.TASK_COMPLETED, TaskScheduledId=i, Result=json.dumps(i))]
    body = json.dumps({"history": history, "instanceId": "bench", "isReplaying": False, "parentInstanceId": None,
                       "input": json.dumps(n + 1)})

    def replay() -> Any:
        return handle(body)

    state = json.loads(replay())
    assert not state["isDone"] and len(state["actions"]) == n + 1, "unexpected orchestrator state"
    return replay
