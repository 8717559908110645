"""The error tree of durable.

Every error the kernel raises on purpose derives from one root, so callers can
catch ``DurableError`` and know they are looking at the kernel speaking::

    DurableError
    ├── ActivityFailed          an activity's last attempt failed (raised at the ``yield``)
    ├── WorkflowFailed          a workflow ended with an uncaught exception
    ├── Cancelled               a workflow was cancelled
    ├── NonDeterminismError     the code no longer yields what history recorded
    ├── WorkflowNotFound        no workflow has that id
    ├── WorkflowAlreadyExists   ``start(..., if_exists="error")`` on an existing id
    ├── SerializationError      a value could not be pickled or unpickled
    ├── PayloadTooLarge         a stored value is over the configured limit
    ├── SignatureError          a signed payload failed verification
    └── ActivityTimeout         an activity attempt ran past its timeout (the ``cause``
                                of ``ActivityFailed``; also a ``TimeoutError``)

Every exception is picklable (RQ pickles exceptions, and ``ActivityFailed``
travels through history), which is why each one passes all of its state to
``Exception.__init__`` and rebuilds itself from ``args`` in ``__reduce__``.
"""

from __future__ import annotations

__all__ = [
    "DurableError",
    "ActivityFailed",
    "WorkflowFailed",
    "Cancelled",
    "NonDeterminismError",
    "WorkflowNotFound",
    "WorkflowAlreadyExists",
    "SerializationError",
    "PayloadTooLarge",
    "SignatureError",
    "ActivityTimeout",
]


class DurableError(Exception):
    """Root of every error durable raises on purpose."""


class ActivityFailed(DurableError):
    """An activity failed on its last attempt.

    Raised inside the workflow at the ``yield`` of the activity. ``cause`` is
    the original exception when it could be pickled and unpickled, otherwise
    ``None``; ``error_type``, ``message`` and ``traceback`` always survive.
    """

    def __init__(
        self,
        activity: str,
        error_type: str,
        message: str,
        traceback: str = "",
        cause: BaseException | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(activity, error_type, message, traceback, cause, attempts)
        self.activity = activity
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.cause = cause
        self.attempts = attempts
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        return (
            f"activity {self.activity} failed after {self.attempts} attempt(s): "
            f"{self.error_type}: {self.message}"
        )


class WorkflowFailed(DurableError):
    """A workflow ended with an uncaught exception.

    The original type name, message and traceback text are kept, so the
    failure can be read from any process even if the exception class cannot be
    imported there.
    """

    def __init__(self, workflow_id: str, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(workflow_id, error_type, message, traceback)
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        text = f"workflow {self.workflow_id!r} failed: {self.error_type}: {self.message}"
        if self.traceback:
            text += "\n\nOriginal traceback (from the worker):\n" + self.traceback.rstrip()
        return text


class Cancelled(DurableError):
    """A workflow was cancelled."""


class NonDeterminismError(DurableError):
    """The workflow code does not yield what its history recorded.

    The message names the sequence number, what history recorded and what the
    code yielded, and how to fix it.
    """


class WorkflowNotFound(DurableError, LookupError):
    """No workflow exists with the given id."""


class WorkflowAlreadyExists(DurableError):
    """A workflow with this id exists and ``if_exists="error"`` was asked."""


class SerializationError(DurableError, TypeError):
    """A value could not be serialized or deserialized."""


class PayloadTooLarge(DurableError, ValueError):
    """A serialized value is larger than the configured limit."""


class SignatureError(DurableError):
    """A stored payload failed HMAC verification and was not unpickled."""


class ActivityTimeout(DurableError, TimeoutError):
    """An activity attempt ran longer than its ``timeout``; counts as a failed attempt."""


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """Return ``(qualified type name, message)`` for storing an exception as text."""
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    return name, str(exc)


