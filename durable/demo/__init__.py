"""``durable demo``: the PR monitor (``examples/pr_monitor``) survives its worker being SIGKILLed.

The product's model story, run for real on this machine with nothing but
durable installed: the embedded Redis, ``durable worker`` processes, the
example's webhook receiver served over HTTP with the standard library (no
Flask), and a stand-in for Slack and GitHub that dedupes by idempotency key
and records every call. Time is compressed: a "day" lasts ``day_seconds``.

The script: a signed ``pull_request opened`` webhook starts the workflow (a
forged one is refused, a redelivered one starts nothing); reminders go out;
the worker is SIGKILLed while Slack holds back its answer to reminder 2 (the
message is posted, the worker never learns it); a new worker resumes, re-sends
only that call (deduped by its key) and carries on; a ``closed`` webhook ends
it. Then the timeline and the call counts show what happened.

The example's code stays in the repository under ``examples/`` (it is not
part of the installed package), so the demo needs durable installed from a
checkout (``pip install -e .``); it says so in one line otherwise.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from ..client import Client
from ..connection import EMBEDDED_DIR_ENV, URL_ENV, embedded, shutdown_embedded
from .report import Mark, summary, timeline

__all__ = ["run", "DemoError", "EXAMPLES"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = b"durable-demo-webhook-secret"
OWNER, REPO, NUMBER = "octo", "widgets", 42
KILL_DAY = 2  # the worker dies while posting this day's reminder
LEASE_TTL = 2.0  # seconds before worker 2 takes over the dead worker's step


class DemoError(RuntimeError):
    """The demo could not show what it meant to (a worker died, a webhook was refused)."""


def load_example() -> SimpleNamespace:
    """Import ``examples/pr_monitor`` from durable's checkout, and make it importable for workers."""
    if not (EXAMPLES / "pr_monitor" / "__init__.py").is_file():
        raise ImportError(
            f"durable demo runs examples/pr_monitor from durable's source checkout, and there is none at "
            f"{EXAMPLES}; install durable from a clone: git clone <durable's repository> && pip install -e ./durable"
        )
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    modules = {name: importlib.import_module(f"pr_monitor.{name}") for name in ("standin", "serving", "webhook")}
    origin = Path(modules["standin"].__file__ or "").resolve()
    if EXAMPLES not in origin.parents:
        raise ImportError(f"another module named pr_monitor ({origin}) shadows {EXAMPLES / 'pr_monitor'}; "
                          "rename it or run the demo from another directory")
    return SimpleNamespace(**modules)


class _Workers:
    """``durable worker`` processes, each in its own session, so a kill takes its whole group."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}

    def start(self) -> subprocess.Popen[bytes]:
        name = f"worker {len(self.procs) + 1}"
        log = self.directory / f"{name.replace(' ', '-')}.log"
        cmd = [sys.executable, "-m", "durable", "worker", "--import", "pr_monitor.workflow",
               "--lease-ttl", str(LEASE_TTL), "--log-level", "WARNING"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=self.directory, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        self.names[proc.pid] = name
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def check(self) -> None:
        """Raise if a worker that should be running has exited."""
        for proc in self.procs:
            if proc.returncode is None and proc.poll() is not None:
                raise DemoError(f"{self.names[proc.pid]} exited with {proc.returncode}:\n{self.tail(proc)}")

    def tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        log = self.directory / f"{self.names[proc.pid].replace(' ', '-')}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            try:  # RQ's scheduler child shares the group: make sure none of it outlives the demo
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _worker_env(directory: Path, standin_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != URL_ENV}
    path = [str(EXAMPLES), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env.update(standin_env, PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    env[EMBEDDED_DIR_ENV] = str(directory / "redis")
    return env


def _wait(predicate: Callable[[], Any], timeout: float, what: str, workers: _Workers) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        workers.check()
        if time.monotonic() > deadline:
            raise DemoError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.02)


def run(days: int = 3, day_seconds: float = 2.0, keep: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code (0: it showed what it should)."""
    if days < KILL_DAY:
        raise ValueError(f"--days must be at least {KILL_DAY}: the demo kills the worker during reminder {KILL_DAY}")
    if not day_seconds > 0:
        raise ValueError("--day-seconds must be a positive number of seconds")
    example = load_example()
    stream = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    directory = Path(tempfile.mkdtemp(prefix="durable-demo-"))
    workers = _Workers(directory, {})
    t0 = time.time()
    marks: list[Mark] = []

    def mark(text: str) -> None:
        marks.append(Mark(time.time(), text))
        say(f"  +{time.time() - t0:5.1f}s  {text}")

    try:
        with example.standin.Standin() as standin:
            workers.env = _worker_env(directory, standin.env())
            client = Client(embedded(directory / "redis"))
            receiver = example.webhook.WebhookReceiver(client, SECRET, day_seconds)
            with example.serving.serve_receiver(receiver) as server:
                say(f"durable demo: the PR monitor of examples/pr_monitor on the embedded Redis in {directory}; "
                    f"a 'day' lasts {day_seconds:g} s")
                say(f"  stand-in Slack and GitHub at {standin.url}, webhook receiver at {server.url}/webhook")
                result, handle = _scenario(example, standin, f"{server.url}/webhook", client, workers, days,
                                           day_seconds, mark)
            history = handle.history()
            calls = standin.calls()
            state = {"channels": len(standin.slack.channels), "messages": len(standin.slack.messages()),
                     "comments": sum(len(c) for c in standin.github.comments.values())}
        say(f"\nresult: {result!r}\n")
        timeline(say, t0, marks, history, calls, workers.names)
        say("")
        ok = summary(say, history, calls, workers.names, state)
        say(f"\ndemo finished in {time.time() - t0:.1f} s.")
        say("Next: examples/pr_monitor/README.md runs the same code against a real Redis "
            "(DURABLE_REDIS_URL=redis://host:6379/0 durable worker --import pr_monitor.workflow), a real Slack bot "
            "token (SLACK_BOT_TOKEN) and a real GitHub webhook (GITHUB_WEBHOOK_SECRET, GITHUB_TOKEN).")
        return 0 if ok else 1
    except BaseException:
        for proc in workers.procs:
            print(f"--- {workers.names[proc.pid]} (pid {proc.pid}), last lines of its log:\n{workers.tail(proc)}",
                  file=sys.stderr)
        raise
    finally:
        workers.stop_all()
        shutdown_embedded()
        if keep:
            say(f"(kept {directory})")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _scenario(example: SimpleNamespace, standin: Any, url: str, client: Client, workers: _Workers, days: int,
              day_seconds: float, mark: Callable[[str], None]) -> tuple[Any, Any]:
    """Everything between starting the first worker and the workflow's result."""
    deliver, event = example.standin.deliver, example.standin.pull_request_event
    pull = standin.open_pull(OWNER, REPO, NUMBER, title="Add sprocket support", author="alice")
    # Slack posts reminder 2 but keeps its answer back: the worker is killed waiting for it.
    standin.hold("chat.postMessage", f"day {KILL_DAY}:", seconds=120)
    first = workers.start()
    mark(f"worker 1 started (pid {first.pid})")

    opened = event("opened", OWNER, REPO, pull, "alice")
    status, answer = deliver(url, "pull_request", opened, b"not-the-secret")
    mark(f"webhook 'opened' signed with the wrong secret -> {status}: {_first(answer.get('error'))}")
    status, answer = deliver(url, "pull_request", opened, SECRET, delivery="delivery-1")
    if status != 202:
        raise DemoError(f"the receiver answered the signed 'opened' webhook with {status}: {answer}")
    handle = client.get(answer["workflow_id"])
    mark(f"webhook 'opened' for {OWNER}/{REPO}#{NUMBER} -> {status}: started workflow {handle.id}")
    status, answer = deliver(url, "pull_request", opened, SECRET, delivery="delivery-1")
    mark(f"the same webhook redelivered -> {status}: {answer.get('note')}")

    budget = 30 + (KILL_DAY + 1) * day_seconds * 2
    held = _wait(standin.held, budget, f"reminder {KILL_DAY} to reach Slack", workers)
    workers.kill(first)
    mark(f"worker 1 (pid {first.pid}) KILLED with SIGKILL while waiting for Slack's answer to "
         f"{held.detail!r} (Slack has posted it; the worker never learned that)")
    standin.release()
    second = workers.start()
    mark(f"worker 2 started (pid {second.pid}); it takes over within the {LEASE_TTL:g} s lease")

    def reminded(call: Any) -> bool:
        return call.endpoint == "chat.postMessage" and f"day {days}:" in call.detail and call.caller == second.pid
    _wait(lambda: any(reminded(c) and c.ok for c in standin.calls()), 30 + days * day_seconds * 2,
          f"reminder {days} from worker 2", workers)
    merged = standin.close_pull(OWNER, REPO, NUMBER, merged=True, by="bob")
    closed = event("closed", OWNER, REPO, merged, "bob")
    status, answer = deliver(url, "pull_request", closed, SECRET, delivery="delivery-2")
    if status != 202:
        raise DemoError(f"the receiver answered the 'closed' webhook with {status}: {answer}")
    mark(f"webhook 'closed' (merged by bob) -> {status}: signal 'closed' sent to {handle.id}")
    try:
        result = handle.result(timeout=30 + day_seconds)
    except TimeoutError as exc:
        workers.check()
        raise DemoError(str(exc)) from None
    status, answer = deliver(url, "pull_request", closed, SECRET, delivery="delivery-2")
    mark(f"the 'closed' webhook redelivered -> {status}: {_first(answer.get('note'))}")
    return result, handle


def _first(text: Any) -> str:
    """The first clause of a receiver's message: enough for one line of the timeline."""
    return str(text).split("; ")[0].split(": the ")[0]
