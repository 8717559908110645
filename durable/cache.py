"""Live generators kept between steps, so a warm step costs O(new events).

A worker that advanced a workflow keeps its ``Replayer`` (the generator,
suspended at its last ``yield``, and what history it has seen). The next step
on that worker reads only the events after that point and feeds them in;
everything else (a miss, a different run, a lost commit race, an error) falls
back to a full replay. An entry is *taken out* while a step uses it and put
back only after that step's commits all succeeded, so a half-applied state can
never be reused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .records import Meta
from .replay import Replayer

__all__ = ["CachedRun", "GeneratorCache", "CACHE_SIZE_ENV"]

CACHE_SIZE_ENV = "DURABLE_CACHE_SIZE"


@dataclass
class CachedRun:
    """A suspended run: its replayer has been fed exactly ``length`` history events."""

    run_id: str
    replayer: Replayer
    length: int
    meta: Meta | None = None  # the meta hash as of the run's last commit by this worker
    tip: bytes = b""  # history entry ``length - 1`` as stored: a later load checks it is still there


class GeneratorCache:
    """A bounded LRU of suspended runs, by workflow id."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"the generator cache size must be >= 0 (0 turns it off), not {size}")
        self.size = size
        self._runs: OrderedDict[str, CachedRun] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._runs)

    def take(self, workflow_id: str, run_id: str) -> CachedRun | None:
        """Remove and return the entry for this run, if there is one."""
        entry = self._runs.pop(workflow_id, None)
        if entry is not None and entry.run_id == run_id:
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(self, workflow_id: str, entry: CachedRun) -> None:
        if self.size == 0:
            return
        self._runs[workflow_id] = entry
        self._runs.move_to_end(workflow_id)
        while len(self._runs) > self.size:
            self._runs.popitem(last=False)
            self.evictions += 1

    def discard(self, workflow_id: str) -> None:
        self._runs.pop(workflow_id, None)

    def clear(self) -> None:
        self._runs.clear()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
