"""durabletask-python's replay engine, offline: ``_OrchestrationExecutor.execute`` over a
synthesized history of N completed activities (no sidecar, no gRPC).

The executor is what its worker calls for every orchestration work item, with
the whole past history each time (it keeps no generator between work items).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..common import require, version


def label() -> str:
    return f"durabletask-python {version('durabletask')} executor (offline, protobuf history in memory)"


def replayer(n: int) -> Callable[[], Any]:
    """A function that replays an orchestration of ``n`` completed activities once."""
    require("durabletask", "durabletask")
    from durabletask import task, worker
    from durabletask.internal import helpers
    from durabletask.serialization import JsonDataConverter

    def act(ctx: Any, x: int) -> int:
        return x

    def orchestrator(ctx: Any, count: int) -> Any:
        result = None
        for i in range(count):
            result = yield ctx.call_activity(act, input=i)
        return result

    registry = worker._Registry()
    name = registry.add_orchestrator(orchestrator)
    registry.add_activity(act)
    activity = task.get_name(act)
    # n + 1 activities in the code, n in history: the replay ends by scheduling the next one.
    old = [helpers.new_orchestrator_started_event(),
           helpers.new_execution_started_event(name, "bench", encoded_input=json.dumps(n + 1))]
    for i in range(n):
        old.append(helpers.new_task_scheduled_event(i + 1, activity, json.dumps(i)))
        old.append(helpers.new_task_completed_event(i + 1, json.dumps(i)))
    new = [helpers.new_orchestrator_started_event()]
    log = logging.getLogger("durable-bench.durabletask")
    log.setLevel(logging.WARNING)
    converter = JsonDataConverter()

    def replay() -> Any:
        executor = worker._OrchestrationExecutor(registry, log, data_converter=converter)
        result = executor.execute("bench", old, new)
        assert result.actions and result.actions[0].HasField("scheduleTask"), result.actions
        return result

    replay()
    return replay
