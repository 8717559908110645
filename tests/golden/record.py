"""Record the golden histories: ``python -m tests.golden.record`` (run once per new scenario).

Each file holds the raw history entries exactly as Redis stored them, so the
replay test decodes them with the current code: what a deployed kernel would
read after an upgrade.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import timedelta
from pathlib import Path

import cloudpickle

import durable
from durable.serialization import decode_event
from durable.testing import WorkflowEnvironment
from tests.golden import flows

HERE = Path(__file__).parent
START = 1_800_000_000.0  # a fixed virtual time


def _save(env: WorkflowEnvironment, handle: durable.WorkflowHandle, name: str, workflow, args, kwargs) -> None:
    """Write the handle's live history, or for a run that continued as new, its archived one."""
    store = env.client.store
    archived = store.archived_runs(handle.id)
    if archived:
        run_id, key = archived[0], store.archive_key(handle.id, archived[0])
    else:
        run_id, key = store.meta(handle.id).run_id, store.history_key(handle.id)
    raw = env.conn.lrange(key, 0, -1)
    payload = {
        "workflow": workflow.path,
        "workflow_id": handle.id,
        "run_id": run_id,
        "input": base64.b64encode(cloudpickle.dumps((args, kwargs))).decode(),
        "recorded_with": durable.__version__,
        "ends_with": decode_event(raw[-1]).type,
        "history": [base64.b64encode(item).decode() for item in raw],
    }
    (HERE / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"recorded {name}: {len(raw)} events, ends with {payload['ends_with']}")


def main() -> int:
    with WorkflowEnvironment(start=START) as env:
        h = env.start(flows.order_flow, "A-1", 1999, workflow_id="golden-order")
        env.run(h)
        _save(env, h, "order_flow", flows.order_flow, ("A-1", 1999), {})

        h = env.start(flows.approval_flow, "R-9", workflow_id="golden-approval")
        env.signal(h, "decision", "approved", after=timedelta(hours=2, minutes=30))
        env.signal(h, "extra", "bonus", after=timedelta(hours=2, minutes=31))
        env.run(h)
        _save(env, h, "approval_flow", flows.approval_flow, ("R-9",), {})

        h = env.start(flows.family_flow, workflow_id="golden-family")
        env.run(h)
        _save(env, h, "family_flow", flows.family_flow, (), {})

        h = env.start(flows.cancellable_flow, workflow_id="golden-cancel")
        env.advance(timedelta(minutes=5))
        h.cancel()
        env.run(h)
        _save(env, h, "cancellable_flow", flows.cancellable_flow, (), {})

        h = env.start(flows.looping_flow, 0, workflow_id="golden-loop")
        env.run(h)
        _save(env, h, "looping_flow", flows.looping_flow, (1,), {})

        h = env.start(flows.failing_flow, workflow_id="golden-fail")
        try:
            env.run(h)
        except durable.WorkflowFailed:
            pass
        _save(env, h, "failing_flow", flows.failing_flow, (), {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
