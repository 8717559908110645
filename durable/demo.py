"""``durable demo``: a reminder workflow that survives its worker being SIGKILLed.

Runs entirely on the embedded Redis in a temporary directory: starts a worker
process, starts a workflow that creates a "channel" and posts a reminder every
"day" (a couple of seconds), kills the worker with SIGKILL while it is posting,
starts a fresh worker, and prints the timeline from the workflow's history.
The stand-in chat service dedupes by idempotency key, as real APIs do, so the
re-run of the interrupted post is visible in the executions but not in the
messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .client import Client
from .commands import sleep
from .connection import EMBEDDED_DIR_ENV, embedded, shutdown_embedded
from .context import activity_info
from .registry import activity, workflow

__all__ = ["remind", "run"]

LOG_ENV = "DURABLE_DEMO_DIR"


def _service_dir() -> Path:
    return Path(os.environ.get(LOG_ENV, "."))


def _record(line: str) -> None:
    with open(_service_dir() / "executions.log", "a") as fh:
        fh.write(f"{time.time():.3f} {os.getpid()} {line}\n")


def _deliver(key: str, text: str) -> bool:
    """The stand-in chat service: accepts each idempotency key once."""
    inbox = _service_dir() / "messages.log"
    seen = inbox.read_text().splitlines() if inbox.exists() else []
    if any(line.split(" ", 1)[0] == key for line in seen):
        return False
    with open(inbox, "a") as fh:
        fh.write(f"{key} {text}\n")
    return True


@activity
def create_channel(pr: int) -> str:
    key = activity_info().idempotency_key
    _record(f"create_channel {key}")
    _deliver(key, f"channel #pr-{pr} created")
    return f"#pr-{pr}"


@activity(timeout=30)
def post(channel: str, text: str, seconds: float = 0.0) -> None:
    key = activity_info().idempotency_key
    _record(f"post-start {key} {text}")
    time.sleep(seconds)  # a slow API call: the demo kills the worker in here
    _deliver(key, f"{channel}: {text}")
    _record(f"post-done {key} {text}")


@workflow
def remind(pr: int, days: int, day_seconds: float):
    """Post a reminder about PR ``pr`` every "day" for ``days`` days."""
    channel = yield create_channel(pr)
    yield post(channel, f"Please review #{pr}")
    for day in range(1, days + 1):
        yield sleep(day_seconds)
        yield post(channel, f"Reminder {day}: #{pr} is still open", 1.5)
    return f"{channel}: {days} reminders sent"


def _spawn_worker(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, EMBEDDED_DIR_ENV: str(directory / "redis"), LOG_ENV: str(directory)}
    env.pop("DURABLE_REDIS_URL", None)
    cmd = [sys.executable, "-m", "durable", "worker", "--import", "durable.demo", "--lease-ttl", "2",
           "--log-level", "WARNING"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError(f"the demo waited {timeout:.0f} s for {needle!r} in {path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(days: int = 3, day_seconds: float = 2.0, keep: bool = False, out: Any = None) -> int:
    """Run the demo; returns the process exit code."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    directory = Path(tempfile.mkdtemp(prefix="durable-demo-"))
    os.environ[LOG_ENV] = str(directory)
    workers: list[subprocess.Popen[bytes]] = []
    t0 = time.time()
    marks: list[tuple[float, str]] = []
    try:
        client = Client(embedded(directory / "redis"))
        say(f"durable demo: embedded Redis in {directory / 'redis'}; a 'day' lasts {day_seconds:g} s")
        workers.append(_spawn_worker(directory, directory / "worker-1.log"))
        marks.append((time.time(), f"worker 1 started (pid {workers[0].pid})"))
        handle = client.start(remind, 42, days, day_seconds, workflow_id="pr-42")
        say(f"started workflow {handle.id}; waiting for reminder 2 to be mid-post ...")
        _wait_for(directory / "executions.log", "post-start", 30)
        _wait_for(directory / "executions.log", "Reminder 2", 30 + days * day_seconds)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        marks.append((time.time(), f"worker 1 KILLED with SIGKILL (pid {workers[0].pid}) in the middle of a post"))
        say("worker 1 killed with SIGKILL mid-activity; starting worker 2 ...")
        workers.append(_spawn_worker(directory, directory / "worker-2.log"))
        marks.append((time.time(), f"worker 2 started (pid {workers[1].pid})"))
        result = handle.result(timeout=60)
        say(f"\nresult: {result!r}\n")
        _timeline(say, handle.history(), marks, t0)
        _summary(say, directory)
        say("\nNext: run your own workers against a real Redis with DURABLE_REDIS_URL=redis://host:6379/0 "
            "`durable worker --import yourapp.workflows`, and see README.md.")
        return 0
    finally:
        for proc in workers:
            _stop(proc)
        shutdown_embedded()
        if keep:
            say(f"(kept {directory})")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _timeline(say: Any, history: list[dict[str, Any]], marks: list[tuple[float, str]], t0: float) -> None:
    rows = [(m[0], f"{'':>4}  ** {m[1]}") for m in marks]
    for event in history:
        what = event["type"]
        if what == "activity_scheduled":
            args = ", ".join(repr(a) for a in event["args"])
            what += f"  {event['activity'].split(':')[-1]}({args})"
        elif what == "timer_started":
            what += f"  fires at +{event['fire_at'] - t0:.1f}s"
        elif what in ("activity_completed", "workflow_completed") and event.get("result") is not None:
            what += f"  -> {event['result']!r}"
        seq = "" if event["seq"] < 0 else str(event["seq"])
        rows.append((event["time"], f"{seq:>4}  {what}"))
    say("timeline (seconds since start, sequence number, event):")
    for when, text in sorted(rows, key=lambda row: row[0]):
        say(f"  +{when - t0:6.2f}s {text}")


def _summary(say: Any, directory: Path) -> None:
    executions = (directory / "executions.log").read_text().splitlines()
    messages = (directory / "messages.log").read_text().splitlines()
    starts = Counter(line.split()[3] for line in executions if line.split()[2] in ("post-start", "create_channel"))
    rerun = [key for key, count in starts.items() if count > 1]
    pids = sorted({line.split()[1] for line in executions})
    say(f"\nactivity executions: {sum(starts.values())} by worker pids {', '.join(pids)}; "
        f"re-run after the kill: {len(rerun)} ({', '.join(rerun) or 'none'})")
    say(f"messages delivered by the stand-in service: {len(messages)} for {len(starts)} distinct activity calls "
        f"(duplicates: {len(messages) - len(set(line.split()[0] for line in messages))})")
