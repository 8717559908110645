"""The decorators, and finding a workflow or activity again by its name.

Like RQ job functions, workflows and activities are found by import path
(``"package.module:qualname"``): the worker imports the module that defined
them. A process-local table also remembers every decorated object, so code in
the same process (tests, the testing kit) finds functions that no import path
reaches.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .commands import ActivityCall, ActivityOptions, Limit, RetryPolicy, StartChild
from .context import current_workflow as in_workflow_code

if TYPE_CHECKING:
    from .records import Meta
    from .replay import Replayer

__all__ = ["Workflow", "Activity", "workflow", "activity", "resolve", "import_path", "limit_of", "replayer_for"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_local: dict[str, Any] = {}
_overrides: dict[str, Callable[..., Any]] = {}  # activity path -> fake, set by durable.testing
_limits: dict[str, Limit] = {}  # limit name -> its settings, as the activities of this process declared it


def import_path(func: Callable[..., Any]) -> str:
    return f"{func.__module__}:{func.__qualname__}"


def is_importable(path: str) -> bool:
    """Whether another process could import ``path`` (not ``__main__``, not a local)."""
    module, _, qualname = path.partition(":")
    return module != "__main__" and "<locals>" not in qualname


class Workflow(Generic[F]):
    """A registered workflow: a generator function plus its defaults."""

    def __init__(self, func: F, name: str | None = None, queue: str | None = None) -> None:
        if not inspect.isgeneratorfunction(func):
            raise TypeError(
                f"@durable.workflow needs a generator function (one that uses `yield`), "
                f"but {func.__qualname__} is not; yield activities and durable commands from it"
            )
        self.func = func
        self.path = import_path(func)
        self.name = name or func.__qualname__
        self.queue = queue
        functools.update_wrapper(self, func)
        _local[self.path] = self

    def __call__(self, *args: Any, **kwargs: Any) -> StartChild:
        """Inside a workflow: a command that runs this workflow as a child; ``yield`` it."""
        return self.options()(*args, **kwargs)

    def options(self, *, workflow_id: str | None = None, queue: str | None = None) -> Callable[..., StartChild]:
        """This workflow as a child with its id or queue chosen for one call."""
        if in_workflow_code() is None:
            raise TypeError(
                f"workflow {self.name} is not called directly: start it with durable.Client().start({self.name}, ...), "
                "or call it inside another workflow and yield the result to run it as a child"
            )

        def call(*args: Any, **kwargs: Any) -> StartChild:
            return StartChild(self.path, args, kwargs, workflow_id, queue or self.queue)

        return call

    def __repr__(self) -> str:
        return f"<durable.workflow {self.path}>"


class Activity(Generic[F]):
    """A registered activity. Calling it returns a command to ``yield``.

    ``limit`` (a ``durable.Limit``) belongs to the activity, not to a call: the
    worker reads it from the code, so it is not among the per-call options.
    """

    def __init__(self, func: F, options: ActivityOptions, limit: Limit | None = None) -> None:
        if inspect.isgeneratorfunction(func):
            raise TypeError(
                f"@durable.activity got a generator function {func.__qualname__}; "
                "activities are plain (or async) functions, workflows are generators"
            )
        self.func = func
        self.path = import_path(func)
        self.name = self.path
        self.defaults = options
        self.limit = _declare(limit)
        functools.update_wrapper(self, func)
        _local[self.path] = self

    def __call__(self, *args: Any, **kwargs: Any) -> ActivityCall:
        """A command that runs this activity with these arguments; ``yield`` it inside a workflow."""
        return ActivityCall.make(self.path, args, kwargs, self.defaults)

    def options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        inline: bool | None = None,
    ) -> Callable[..., ActivityCall]:
        """This activity with some options overridden for one call: ``act.options(timeout=5)(x)``."""
        changes: dict[str, Any] = {}
        if retry is not None:
            changes["retry"] = retry
        if timeout is not None:
            changes["timeout"] = timeout
        if queue is not None:
            changes["queue"] = queue
        if inline is not None:
            changes["inline"] = inline
        opts = replace(self.defaults, **changes)

        def call(*args: Any, **kwargs: Any) -> ActivityCall:
            return ActivityCall(self.path, args, kwargs, opts)

        return call

    def __repr__(self) -> str:
        return f"<durable.activity {self.path}>"


@overload
def workflow(func: F, /) -> Workflow[F]: ...
@overload
def workflow(*, name: str | None = None, queue: str | None = None) -> Callable[[F], Workflow[F]]: ...
def workflow(func: Any = None, /, *, name: str | None = None, queue: str | None = None) -> Any:
    """Mark a generator function as a durable workflow."""
    if func is not None:
        return Workflow(func, name=name, queue=queue)
    return lambda f: Workflow(f, name=name, queue=queue)


@overload
def activity(func: F, /) -> Activity[F]: ...
@overload
def activity(
    *,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    inline: bool = False,
    limit: Limit | None = None,
) -> Callable[[F], Activity[F]]: ...
def activity(
    func: Any = None,
    /,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    inline: bool = False,
    limit: Limit | None = None,
) -> Any:
    """Mark a function as an activity: a side effect whose result is recorded once.

    ``limit``: a ``durable.Limit`` that every worker enforces together for the
    attempts of this activity (and of every activity naming the same limit).
    """
    options = ActivityOptions(retry=retry or RetryPolicy(), timeout=timeout, queue=queue, inline=inline)
    _declare(limit)  # wrong settings fail at the decorator line, not at the first call
    if func is not None:
        return Activity(func, options, limit)
    return lambda f: Activity(f, options, limit)


def _declare(limit: Limit | None) -> Limit | None:
    """Check ``limit`` and remember its settings under its name: two different settings
    under one name would make workers enforce whichever attempt asked last."""
    if limit is None:
        return None
    if not isinstance(limit, Limit):
        raise TypeError(f"@durable.activity(limit=...) takes a durable.Limit, not {limit!r:.80}")
    known = _limits.setdefault(limit.name, limit)
    if known != limit:
        raise ValueError(
            f"two limits are named {limit.name!r} with different settings ({known} and {limit}): "
            "define the Limit once and pass the same object to every activity that shares it"
        )
    return limit


def limit_of(path: str) -> Limit | None:
    """The limit the activity registered at ``path`` declares, if any; None when its code
    cannot be imported here (the attempt then reports the missing code). A fake put in
    by the testing kit keeps the activity's limit."""
    found = _local.get(path)
    if found is None:
        try:
            found = _local.get(path, resolve(path))  # importing the module registers it
        except ImportError:
            return None
    limit = getattr(found, "limit", None)
    return limit if isinstance(limit, Limit) else None


def override(path: str, fake: Callable[..., Any] | None) -> None:
    """Make ``resolve(path)`` return ``fake`` (``None`` removes it); for the testing kit."""
    if fake is None:
        _overrides.pop(path, None)
    else:
        _overrides[path] = fake


def resolve(path: str) -> Any:
    """The decorated object registered under ``path``, importing its module if needed.

    Raises:
        ImportError: the module cannot be imported or has no such attribute;
            the message says what to put on the worker's ``PYTHONPATH``.
    """
    found = _overrides.get(path) or _local.get(path)
    if found is not None:
        return found
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import module {module_name!r} for {path!r}: {exc}. Put it on the worker's "
            "PYTHONPATH or name it with `durable worker --import MODULE`"
        ) from exc
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ImportError(
                f"module {module_name!r} has no {qualname!r}: was it renamed or removed? "
                "Deploy code that still defines it so that running workflows can finish"
            )
    return _local.get(path, obj)


def replayer_for(meta: Meta) -> Replayer:
    """A replayer for the stored run ``meta`` describes: its workflow code found by import
    path, its arguments unpickled. Workers, ``durable replay`` and ``durable inspect`` all
    start a replay from here.

    Raises:
        ImportError: the workflow's code cannot be imported.
        SerializationError, SignatureError: its arguments cannot be read.
    """
    from .replay import Replayer
    from .serialization import loads

    target = resolve(meta.path)
    args, kwargs = loads(meta.input, f"the arguments of workflow {meta.workflow_id}")
    return Replayer(getattr(target, "func", target), args, kwargs, workflow_id=meta.workflow_id,
                    run_id=meta.run_id, name=meta.name)
