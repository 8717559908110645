"""Replaying stored histories against the code deployed now: the deploy gate.

``durable replay ID`` / ``durable replay --all`` run each workflow's generator
through its history exactly as a worker would, without running activities or
writing anything, and report every workflow whose history the current code no
longer reproduces. Run it with the new code before switching workers to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import DurableError, NonDeterminismError
from .registry import replayer_for
from .store import TERMINAL, Store

__all__ = ["ReplayReport", "replay_workflow", "replay_many"]


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of replaying one workflow: ``ok`` unless ``problem`` says what broke."""

    workflow_id: str
    status: str
    events: int
    ok: bool
    outcome: str  # where the replay stopped: schedule, wait, complete, fail, cancelled, continue
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_workflow(store: Store, workflow_id: str) -> ReplayReport:
    """Replay one workflow's current run; never writes, never runs activities."""
    meta = store.meta(workflow_id)
    try:
        _, history = store.load(workflow_id)
        replayer = replayer_for(meta)
        replayer.feed(history)
        decision = replayer.step()
    except NonDeterminismError as exc:
        return ReplayReport(workflow_id, meta.status, len(store.history(workflow_id)), False, "mismatch", str(exc))
    except (ImportError, DurableError) as exc:
        return ReplayReport(workflow_id, meta.status, 0, False, "error", f"{type(exc).__name__}: {exc}")
    return ReplayReport(workflow_id, meta.status, len(history), True, decision.kind)


def replay_many(store: Store, workflow_ids: list[str] | None = None, *, finished: bool = False) -> list[ReplayReport]:
    """Replay the given workflows, or every running one (and ended ones too with ``finished``)."""
    if workflow_ids is None:
        ids = store.workflow_ids()
        statuses = store.statuses(ids)
        workflow_ids = [i for i, s in zip(ids, statuses, strict=True) if s and (finished or s not in TERMINAL)]
    return [replay_workflow(store, workflow_id) for workflow_id in workflow_ids]
