"""Golden histories: histories recorded by earlier versions must keep replaying.

Each ``tests/golden/*.json`` holds a history exactly as Redis stored it. The
current kernel decodes it and replays it against the workflow code in
``tests/golden/flows.py``; the replay must reach the same ending without a
``NonDeterminismError``. A change to the event format, the engine's matching
or the encoding that breaks old histories fails here, before it reaches users.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cloudpickle
import pytest

from durable.registry import resolve
from durable.replay import Replayer
from durable.serialization import decode_event

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))

ENDINGS = {
    "workflow_completed": "complete",
    "workflow_failed": "fail",
    "workflow_cancelled": "cancelled",
    "workflow_continued": "continue",
}


def test_there_are_golden_histories_of_every_command():
    assert len(GOLDEN) >= 6
    types = set()
    for path in GOLDEN:
        data = json.loads(path.read_text())
        types |= {decode_event(base64.b64decode(item)).type for item in data["history"]}
    assert types >= {
        "activity_scheduled", "activity_completed", "activity_retrying", "activity_failed", "timer_started",
        "timer_fired", "signal_wait_started", "signal_received", "child_started", "child_completed",
        "value_recorded", "marker_recorded", "cancel_requested", "workflow_completed", "workflow_failed",
        "workflow_continued",
    }


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_history_replays_to_the_same_ending(path):
    data = json.loads(path.read_text())
    events = [decode_event(base64.b64decode(item)) for item in data["history"]]
    args, kwargs = cloudpickle.loads(base64.b64decode(data["input"]))
    workflow = resolve(data["workflow"])
    replayer = Replayer(workflow.func, args, kwargs, workflow_id=data["workflow_id"], run_id=data["run_id"])
    replayer.feed(events)
    decision = replayer.step()
    assert decision.kind == ENDINGS[data["ends_with"]]
    recorded = events[-1]
    if decision.kind == "complete":
        assert decision.result == recorded.result
    elif decision.kind == "continue":
        assert (decision.args, decision.kwargs) == (recorded.args, recorded.kwargs)
    elif decision.kind == "fail":
        assert decision.error.type == recorded.error_info().type
