"""What the replay engine decides, and the checks that a replay matches its history.

``Decision`` is the engine's whole output. The checks raise
``NonDeterminismError`` with a message that names the sequence number, what
history recorded, what the code did instead, and how to fix it: that message
is what a user reads after a bad deploy, so it lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .commands import Command
from .errors import Cancelled, NonDeterminismError
from .events import (
    ErrorInfo,
    Event,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinued,
    WorkflowFailedEvent,
)

__all__ = ["Decision", "DecisionKind", "FIX_HINT", "TERMINAL_KIND", "ended_by", "check_match", "check_ending"]

DecisionKind = Literal["schedule", "wait", "complete", "fail", "cancelled", "continue"]


@dataclass(frozen=True)
class Decision:
    """What the runtime must do next for a workflow.

    ``schedule``: record and dispatch ``new`` (``(seq, command)`` pairs).
    ``wait``: suspended on ``waiting`` seqs whose answers are not in history.
    ``complete``: returned ``result``. ``fail``/``cancelled``: ended with ``error``.
    ``continue``: ``continue_as_new(*args, **kwargs)``.
    """

    kind: DecisionKind
    new: tuple[tuple[int, Command], ...] = ()
    waiting: tuple[int, ...] = ()
    result: Any = None
    error: ErrorInfo | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


FIX_HINT = (
    "Workflow code must yield the same commands in the same order on every replay: move time, "
    "randomness and I/O into activities or durable.now()/uuid4()/random()/side_effect(), and guard "
    "changed code with `if (yield durable.patched('change-id')):` so runs recorded before the change keep "
    "their old path (or let them finish before deploying it)."
)

TERMINAL_KIND = {
    WorkflowCompleted: "complete",
    WorkflowFailedEvent: "fail",
    WorkflowCancelled: "cancelled",
    WorkflowContinued: "continue",
}


def ended_by(exc: Exception) -> Decision:
    """The decision for an exception that left the workflow's generator."""
    kind: DecisionKind = "cancelled" if isinstance(exc, Cancelled) else "fail"  # else the workflow's own error
    return Decision(kind, error=ErrorInfo.from_exception(exc))



def check_match(what: str, seq: int, command: Command, recorded: Event) -> None:
    """Raise unless ``command``, yielded at ``seq``, is what history recorded there."""
    rec_kind = getattr(recorded, "kind", recorded.type)
    rec_name = getattr(recorded, "name", rec_kind)
    if rec_kind != command.kind or rec_name != command.name:
        recorded_text = rec_kind if rec_name == rec_kind else f"{rec_kind} {rec_name}"  # not "timer timer"
        raise NonDeterminismError(
            f"{what} is not deterministic at sequence {seq}: history recorded {recorded_text} "
            f"but the code now yields {command.describe()}. {FIX_HINT}"
        )


def check_ending(what: str, scheduled: dict[int, Event], terminal: Event | None, outcome: Decision) -> Decision:
    """Raise if history recorded commands the finished code never reached (``scheduled``
    holds those left) or a different ending than ``outcome``; else return ``outcome``."""
    leftover = sorted(scheduled)
    if leftover:
        seq = leftover[0]
        recorded = scheduled[seq]
        ending = {"complete": "returns", "continue": "continues as new"}.get(outcome.kind, "raises")
        raise NonDeterminismError(
            f"{what} is not deterministic at sequence {seq}: history recorded "
            f"{getattr(recorded, 'kind', '?')} {getattr(recorded, 'name', '?')} but the code now {ending} "
            f"before yielding it. {FIX_HINT}"
        )
    if terminal is not None:
        expected = TERMINAL_KIND[type(terminal)]  # type: ignore[index]
        if expected != outcome.kind:
            plain = {"complete": "a normal return", "continue": "continue_as_new"}
            detail = f"{outcome.error.type}: {outcome.error.message}" if outcome.error else plain[outcome.kind]
            raise NonDeterminismError(
                f"{what} is not deterministic: history recorded that it ended with "
                f"{terminal.type}, but the code now ends with {detail}. {FIX_HINT}"
            )
    return outcome
