"""durable: crash-proof workflows as plain Python generators, on Redis and RQ.

A workflow is a generator function; every ``yield`` hands the kernel a command
(an activity call, a durable sleep). RQ workers drive the steps and Redis keeps
the history, so after a crash any worker rebuilds the generator by replaying it.
"""

from __future__ import annotations

from .client import Client, WorkflowHandle, WorkflowStatus
from .commands import (
    Limit,
    RetryPolicy,
    all_of,
    any_of,
    continue_as_new,
    now,
    patched,
    random,
    side_effect,
    sleep,
    sleep_until,
    uuid4,
    wait_signal,
)
from .context import ActivityInfo, WorkflowInfo, activity_info, set_status, workflow_info
from .errors import (
    ActivityFailed,
    ActivityTimeout,
    Cancelled,
    DurableError,
    NonDeterminismError,
    PayloadTooLarge,
    SerializationError,
    SignatureError,
    WorkflowAlreadyExists,
    WorkflowFailed,
    WorkflowNotFound,
)
from .registry import activity, workflow
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "workflow",
    "activity",
    "RetryPolicy",
    "Limit",
    "sleep",
    "sleep_until",
    "wait_signal",
    "all_of",
    "any_of",
    "now",
    "uuid4",
    "random",
    "side_effect",
    "patched",
    "continue_as_new",
    "activity_info",
    "workflow_info",
    "set_status",
    "ActivityInfo",
    "WorkflowInfo",
    "Client",
    "WorkflowHandle",
    "WorkflowStatus",
    "Worker",
    "DurableError",
    "ActivityFailed",
    "ActivityTimeout",
    "WorkflowFailed",
    "Cancelled",
    "NonDeterminismError",
    "WorkflowNotFound",
    "WorkflowAlreadyExists",
    "SerializationError",
    "PayloadTooLarge",
    "SignatureError",
]
