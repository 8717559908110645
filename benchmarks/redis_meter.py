"""What Redis does for a piece of work: the server's ``INFO commandstats`` and ``INFO cpu``
deltas, and the requests redis-py wrote in this process.

The server counts every command it executes, those a Lua script runs
(``redis.call``) included, and the CPU its main thread (the one that executes
commands) used. redis-py knows which commands this process sent and in how many
writes: a round trip each, a pipeline or a MULTI/EXEC being one. The difference
between the server's count and the client's is what ran inside scripts, so
everything that talks to the server during a metered window must live in this
process (an in-process worker, not subprocesses).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from redis.connection import AbstractConnection

# Commands a script cannot run: a server count above the client's for these comes from
# somewhere else (a connection handshake redis-py made outside the window), not from a script.
_NOT_IN_SCRIPTS = frozenset({"hello", "client", "auth", "select", "subscribe", "unsubscribe", "psubscribe",
                             "punsubscribe", "multi", "exec", "discard", "watch", "unwatch", "eval", "evalsha",
                             "script", "info"})


@dataclass(frozen=True)
class ServerSample:
    """Cumulative counters of one redis-server at one instant."""

    calls: dict[str, int]
    usec: dict[str, int]
    cpu_main: float  # seconds, main thread (user + system): where commands run
    cpu_process: float  # seconds, the whole process (its background threads too)
    at: float  # perf_counter


def sample(conn: Any) -> ServerSample:
    """Read the counters (two INFO calls; ``info`` is left out of every delta)."""
    stats = conn.info("commandstats")
    cpu = conn.info("cpu")
    calls: Counter[str] = Counter()
    usec: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_").split("|")[0]  # Redis 7 names subcommands client|setname
        calls[name] += int(value["calls"])
        usec[name] += int(value["usec"])
    main = cpu.get("used_cpu_sys_main_thread")  # Redis >= 6.2; else the process is the best we have
    process = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    cpu_main = float(main) + float(cpu["used_cpu_user_main_thread"]) if main is not None else process
    return ServerSample(dict(calls), dict(usec), cpu_main, process, time.perf_counter())


@dataclass
class ServerDelta:
    calls: dict[str, int]
    usec: dict[str, int]
    cpu_main: float
    cpu_process: float
    seconds: float

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def delta(before: ServerSample, after: ServerSample) -> ServerDelta:
    names = (set(after.calls) | set(before.calls)) - {"info"}
    calls = {n: after.calls.get(n, 0) - before.calls.get(n, 0) for n in names}
    usec = {n: after.usec.get(n, 0) - before.usec.get(n, 0) for n in names}
    return ServerDelta({n: c for n, c in calls.items() if c > 0}, {n: u for n, u in usec.items() if calls[n] > 0},
                       after.cpu_main - before.cpu_main, after.cpu_process - before.cpu_process, after.at - before.at)


@dataclass
class ClientCount:
    """Requests redis-py wrote in this process: round trips, and the commands in them by name."""

    round_trips: int = 0
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def _name(command: Any) -> str:
    name = command.decode() if isinstance(command, bytes) else str(command)
    return name.split()[0].lower()  # redis-py sends some as "CLIENT SETNAME" in one argument


@contextlib.contextmanager
def client_count() -> Iterator[ClientCount]:
    """Count, while inside, what every redis-py connection of this process sends.

    ``send_packed_command`` is one write, answered before the caller goes on: a
    round trip. ``send_command`` carries one command, ``pack_commands`` a
    pipeline's or a transaction's (MULTI and EXEC included, as the server counts
    them). Patches redis-py's connection class and restores it on exit.
    """
    count = ClientCount()
    lock = threading.Lock()
    cls = AbstractConnection
    saved = {name: cls.__dict__[name] for name in ("send_packed_command", "send_command", "pack_commands")}

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
        with lock:
            count.round_trips += 1
        return saved["send_packed_command"](self, command, check_health)

    def send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            count.calls[_name(args[0])] += 1
        return saved["send_command"](self, *args, **kwargs)

    def pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        with lock:
            count.calls.update(_name(args[0]) for args in commands)
        return saved["pack_commands"](self, commands)

    cls.send_packed_command = send_packed_command  # type: ignore[method-assign]
    cls.send_command = send_command  # type: ignore[method-assign]
    cls.pack_commands = pack_commands  # type: ignore[method-assign]
    try:
        yield count
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)


@dataclass
class Metered:
    """One metered window: the work's unit count, its wall time, the server's and the client's view."""

    steps: int
    wall: float
    server: ServerDelta
    client: ClientCount

    def per_step(self) -> dict[str, Any]:
        """Every figure divided by the steps; ``lua`` is what ran inside scripts (server - client)."""
        n = self.steps
        inside = {name: calls - self.client.calls.get(name, 0) for name, calls in self.server.calls.items()
                  if name not in _NOT_IN_SCRIPTS}
        return {
            "wall": self.wall / n,
            "commands": self.server.commands / n,
            "sent": self.client.commands / n,
            "in_scripts": sum(inside.values()) / n,
            "evalsha": self.server.calls.get("evalsha", 0) / n,
            "round_trips": self.client.round_trips / n,
            "cpu_main": self.server.cpu_main / n,
            "cpu_process": self.server.cpu_process / n,
            "usec_sum": sum(self.server.usec.values()) * 1e-6 / n,
            "by_command": {name: calls / n for name, calls in self.server.calls.items()},
            "usec_by_command": {name: usec / n for name, usec in self.server.usec.items()},
            "in_scripts_by_command": {name: calls / n for name, calls in inside.items() if calls},
            "sent_by_command": {name: calls / n for name, calls in self.client.calls.items()},
        }


def metered(conn: Any, work: Any, *args: Any) -> Metered:
    """Run ``work(conn, *args)`` (which returns how many steps it did) in a metered window.

    Raises if the client sent more than the server executed: something else was
    counted, and the split between sent and script commands would be wrong.
    """
    before = sample(conn)
    with client_count() as client:
        start = time.perf_counter()
        steps = work(conn, *args)
        wall = time.perf_counter() - start
    server = delta(before, sample(conn))
    client.calls.pop("info", None)
    extra = {name: calls - server.calls.get(name, 0) for name, calls in client.calls.items()
             if calls > server.calls.get(name, 0)}
    if extra:
        raise RuntimeError(f"the client sent commands the server did not count: {extra}")
    return Metered(steps, wall, server, client)
