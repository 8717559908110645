"""Reading workflows from Redis: meta, history (cold loads from packed blocks), listings.

A mixin of ``Store``, like ``Upkeep``: every key name and Lua script it uses
(``meta_key``, ``history_key``, ``packed_key``, ``_LOAD``, ``_PACK``, ...) is
defined in ``store.py``, so that one module still says what durable keeps in
Redis. The one write here is the packing a worker's cold load triggers: a copy
of full history blocks, never the record itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.client import PubSub

from .errors import WorkflowNotFound
from .events import Event
from .packed import History
from .records import Meta
from .serialization import decode_entries, decode_events, pack_events, unpack_blocks

__all__ = ["Reads", "PACK_SIZE"]

# History events per packed block. On a cold load each entry after the last full block costs
# about 5 us (Lua, the reply, unpickling it) and each block about 7 us (measured with redis-py's
# Python parser), so smaller blocks shorten that tail and bigger ones cut the number of blocks
# of a long history: 128 keeps both small from a thousand events to tens of thousands.
PACK_SIZE = 128


class Reads:
    """Meta, history and listing reads, mixed into ``Store``."""

    if TYPE_CHECKING:  # provided by Store
        conn: redis.Redis
        _load_script: Any
        _pack_script: Any

        @property
        def index_key(self) -> str: ...

        def meta_key(self, workflow_id: str) -> str: ...
        def history_key(self, workflow_id: str) -> str: ...
        def packed_key(self, workflow_id: str) -> str: ...
        def children_key(self, workflow_id: str) -> str: ...
        def runs_key(self, workflow_id: str) -> str: ...
        def done_channel(self, workflow_id: str) -> str: ...

    def meta(self, workflow_id: str) -> Meta:
        raw = cast(dict[bytes, bytes], self.conn.hgetall(self.meta_key(workflow_id)))
        if not raw:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}; `durable list` shows the ones that exist")
        return Meta.decode(workflow_id, raw)

    def load(self, workflow_id: str, *, pack: bool = False) -> tuple[Meta | None, Sequence[Event]]:
        """Meta and the whole history, in one round trip (``load_run`` for a worker's tail).

        From the start (a cold load), full blocks come from their packed copies;
        with ``pack`` (the workers), entries not yet packed are packed for the
        next cold load once they fill a block: one extra write per block.
        """
        meta, events, _ = self.load_run(workflow_id, 0, b"", pack=pack)
        return meta, events or []

    def load_run(self, workflow_id: str, known: int, tip: bytes, *,
                 pack: bool = False) -> tuple[Meta | None, Sequence[Event] | None, bytes]:
        """(meta, the events after the first ``known``, the last entry as stored) in one
        round trip, for a run whose first ``known`` events a worker holds, ending with
        the entry ``tip``; ``known`` 0 for a cold load.

        A cold load's events are a ``History``: a sequence that builds its events when
        read, and whose runs of completed activities the replay engine reads without them.
        Events None: the history no longer starts the way the worker saw it (writes
        lost in a failover or an AOF restart, then others wrote other events at those
        positions), so what it holds is stale and it must load from the start.
        """
        if known > 0:
            pipe = self.conn.pipeline(transaction=False)
            pipe.hgetall(self.meta_key(workflow_id))
            pipe.lrange(self.history_key(workflow_id), known - 1, -1)
            raw_meta, raw = cast(tuple[dict[bytes, bytes], list[bytes]], pipe.execute())
            meta = Meta.decode(workflow_id, raw_meta) if raw_meta else None
            if not raw or raw[0] != tip:
                return meta, None, b""
            return meta, decode_events(raw[1:]), raw[-1]
        keys = [self.meta_key(workflow_id), self.packed_key(workflow_id), self.history_key(workflow_id)]
        flat, blocks, tail, last = cast(list[Any], self._load_script(keys=keys, args=[PACK_SIZE]))
        if not flat:
            return None, [], b""
        meta = Meta.decode(workflow_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        parts = unpack_blocks(blocks, meta.run_id, PACK_SIZE)
        if parts is None:  # another format, run or position: read the list
            self.conn.delete(self.packed_key(workflow_id))
            raw = cast(list[bytes], self.conn.lrange(self.history_key(workflow_id), 0, -1))
            return meta, decode_events(raw), raw[-1] if raw else b""
        rest = History(decode_entries(tail, len(blocks) * PACK_SIZE))
        if pack and len(rest) >= PACK_SIZE:
            self._pack(workflow_id, meta.run_id, len(blocks), rest.events())
        return meta, History(parts + list(rest.parts)), cast(bytes, last)

    def _pack(self, workflow_id: str, run_id: str, have: int, rest: list[Event]) -> None:
        new = [pack_events(run_id, (have + i) * PACK_SIZE, rest[i * PACK_SIZE:(i + 1) * PACK_SIZE])
               for i in range(len(rest) // PACK_SIZE)]
        keys = [self.packed_key(workflow_id), self.history_key(workflow_id), self.meta_key(workflow_id)]
        self._pack_script(keys=keys, args=[have, PACK_SIZE, run_id, *new])

    def history(self, workflow_id: str, start: int = 0) -> list[Event]:
        items = cast(list[bytes], self.conn.lrange(self.history_key(workflow_id), start, -1))
        return decode_events(items)

    def workflow_ids(self) -> list[str]:
        return [item.decode() for item in cast(list[bytes], self.conn.zrange(self.index_key, 0, -1))]

    def statuses(self, workflow_ids: Sequence[str]) -> list[str | None]:
        pipe = self.conn.pipeline(transaction=False)
        for workflow_id in workflow_ids:
            pipe.hget(self.meta_key(workflow_id), "status")
        return [value.decode() if value is not None else None for value in pipe.execute()]

    def metas(self, workflow_ids: Sequence[str]) -> list[Meta | None]:
        """The meta of each workflow (None where there is none), in one round trip: a listing
        of thousands of workflows must not cost a round trip each."""
        pipe = self.conn.pipeline(transaction=False)
        for workflow_id in workflow_ids:
            pipe.hgetall(self.meta_key(workflow_id))
        raws = cast(list[dict[bytes, bytes]], pipe.execute())
        return [Meta.decode(wid, raw) if raw else None for wid, raw in zip(workflow_ids, raws, strict=True)]

    def subscribe_done(self, workflow_id: str) -> PubSub:
        pubsub = self.conn.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.done_channel(workflow_id))
        return pubsub

    def archived_runs(self, workflow_id: str) -> list[str]:
        """Run ids of the kept histories of earlier runs, newest first."""
        return [item.decode() for item in cast(list[bytes], self.conn.lrange(self.runs_key(workflow_id), 0, -1))]

    def children(self, workflow_id: str) -> list[str]:
        return sorted(item.decode() for item in cast(set[bytes], self.conn.smembers(self.children_key(workflow_id))))

    def exists(self, workflow_id: str) -> bool:
        return bool(self.conn.exists(self.meta_key(workflow_id)))
