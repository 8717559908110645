"""The ``durable`` command: run workers and look at workflows from the shell.

Every subcommand takes ``--url`` (default ``$DURABLE_REDIS_URL``, else the
embedded Redis under ``./.durable/``). Errors are one line on stderr and a
non-zero exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import redis

from . import demo
from .check import replay_many
from .client import DEFAULT_QUEUE, Client
from .errors import DurableError, WorkflowFailed
from .observability import LOG_FORMATS, configure_logging
from .registry import Workflow, resolve
from .worker import Worker

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkflowFailed as exc:
        print(f"durable: {exc}", file=sys.stderr)
        return 3
    except (DurableError, ValueError, TypeError, ImportError, TimeoutError) as exc:
        print(f"durable: {exc}", file=sys.stderr)
        return 2
    except redis.ConnectionError as exc:
        print(f"durable: cannot reach Redis ({exc}); check --url or $DURABLE_REDIS_URL", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durable", description="Crash-proof Python workflows on Redis and RQ.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--url", default=None, help="Redis URL (default: $DURABLE_REDIS_URL, else the embedded Redis)")
        return p

    p = command("worker", "run durable workers (RQ SimpleWorkers with the scheduler)")
    p.add_argument("--queue", "-q", action="append", help=f"queue to serve (repeatable; default {DEFAULT_QUEUE})")
    p.add_argument("-n", "--processes", type=int, default=1, help="number of worker processes (default 1)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (where your workflows and activities live)")
    p.add_argument("--lease-ttl", type=float, default=None,
                   help="seconds before a dead worker's step is taken over (default $DURABLE_LEASE_TTL or 10)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=os.environ.get("DURABLE_LOG_FORMAT", "text"),
                   help="text lines, or JSON lines with workflow_id, run_id, seq, attempt, activity on each "
                        "(default $DURABLE_LOG_FORMAT or text)")
    p.set_defaults(func=_worker)

    p = command("demo", "run the demo: a pull-request monitor (webhook, Slack and GitHub stand-ins) survives "
                        "its worker being SIGKILLed (embedded Redis, needs durable installed from its checkout)")
    p.add_argument("--days", type=int, default=3, help="daily reminders before the PR is merged (default 3)")
    p.add_argument("--day-seconds", type=float, default=2.0, help="how long a 'day' lasts (default 2 s)")
    p.add_argument("--keep", action="store_true", help="keep the demo's temporary directory (worker logs, Redis)")
    p.set_defaults(func=_demo)

    p = command("start", "start a workflow: durable start module:workflow [JSON args...]")
    p.add_argument("workflow", help="import path of the workflow, e.g. myapp.flows:monitor_pr")
    p.add_argument("args", nargs="*", help="positional arguments, each JSON (plain words are taken as strings)")
    p.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    p.add_argument("--id", dest="workflow_id", default=None, help="workflow id (default: a random one)")
    p.add_argument("--queue", default=None)
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="wait for the result")
    p.set_defaults(func=_start)

    p = command("status", "show a workflow's status")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = command("result", "wait for a workflow's result and print it")
    p.add_argument("workflow_id")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_result)

    p = command("history", "print a workflow's history")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_history)

    p = command("signal", "send a signal to a running workflow")
    p.add_argument("workflow_id")
    p.add_argument("name")
    p.add_argument("payload", nargs="?", default=None, help="JSON (a plain word is taken as a string)")
    p.set_defaults(func=_signal)

    p = command("cancel", "cancel a running workflow (and its running children)")
    p.add_argument("workflow_id")
    p.set_defaults(func=_cancel)

    p = command("replay", "replay stored histories against the current code (a deploy gate: exit 1 on a mismatch)")
    p.add_argument("workflow_ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every running workflow")
    p.add_argument("--finished", action="store_true", help="with --all: ended workflows too")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (where your workflows live)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_replay)

    p = command("list", "list workflows")
    p.add_argument("--status", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    return parser


def _worker(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise ValueError("-n must be at least 1")
    if args.processes > 1:
        return _worker_pool(args)
    configure_logging(args.log_level, args.log_format)
    sys.path.insert(0, os.getcwd())
    for module in args.imports:
        importlib.import_module(module)
    client = Client(args.url)
    worker = Worker(args.queue or [DEFAULT_QUEUE], connection=client.conn, lease_ttl=args.lease_ttl)
    worker.work(burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper())
    return 0


def _worker_pool(args: argparse.Namespace) -> int:
    """Start N single-process workers and stop them together."""
    base = [sys.executable, "-m", "durable", "worker", "-n", "1", "--log-level", args.log_level,
            "--log-format", args.log_format]
    if args.url:
        base += ["--url", args.url]
    for queue in args.queue or []:
        base += ["--queue", queue]
    for module in args.imports:
        base += ["--import", module]
    if args.burst:
        base.append("--burst")
    if args.lease_ttl is not None:
        base += ["--lease-ttl", str(args.lease_ttl)]
    children = [subprocess.Popen(base) for _ in range(args.processes)]

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def _demo(args: argparse.Namespace) -> int:
    if args.url:
        raise ValueError("durable demo always runs on its own embedded Redis; drop --url")
    try:
        return demo.run(days=args.days, day_seconds=args.day_seconds, keep=args.keep)
    except demo.DemoError as exc:
        print(f"durable demo: {exc}", file=sys.stderr)
        return 1


def _parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _start(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.getcwd())
    path = args.workflow
    if ":" not in path:  # accept module.attr as well as module:attr
        module, _, attr = path.rpartition(".")
        path = f"{module}:{attr}"
    workflow = resolve(path)
    if not isinstance(workflow, Workflow):
        raise TypeError(f"{args.workflow} is not a @durable.workflow")
    kwargs = json.loads(args.kwargs)
    if not isinstance(kwargs, dict):
        raise ValueError("--kwargs must be a JSON object")
    client = Client(args.url)
    handle = client.start(
        workflow, *[_parse_arg(a) for a in args.args], workflow_id=args.workflow_id, queue=args.queue, **kwargs
    )
    print(handle.id)
    if args.wait is not None:
        print(_show(handle.result(timeout=args.wait)))
    return 0


def _status(args: argparse.Namespace) -> int:
    info = Client(args.url).get(args.workflow_id).describe()
    if args.json:
        print(json.dumps(info))
    else:
        line = f"{info['workflow_id']}  {info['status']}  {info['name']}  queue={info['queue']}"
        if info["held"]:
            line += f"\n  held: {info['held']}"
        print(line)
    return 0


def _result(args: argparse.Namespace) -> int:
    value = Client(args.url).get(args.workflow_id).result(timeout=args.timeout)
    print(json.dumps(value, default=repr) if args.json else _show(value))
    return 0


def _history(args: argparse.Namespace) -> int:
    entries = Client(args.url).get(args.workflow_id).history()
    if args.json:
        print(json.dumps(entries, default=repr))
        return 0
    for entry in entries:
        when = dt.datetime.fromtimestamp(entry["time"]).strftime("%H:%M:%S.%f")[:-3]
        seq = "" if entry["seq"] < 0 else entry["seq"]
        rest = {k: v for k, v in entry.items() if k not in ("index", "type", "seq", "time") and v not in (None, {}, ())}
        summary = " ".join(f"{k}={_show(v)}" for k, v in rest.items() if k != "traceback")
        print(f"{entry['index']:>4}  {when}  {seq!s:>4}  {entry['type']:<20} {summary}")
    return 0


def _signal(args: argparse.Namespace) -> int:
    payload = None if args.payload is None else _parse_arg(args.payload)
    Client(args.url).signal(args.workflow_id, args.name, payload)
    print(f"signal {args.name!r} sent to {args.workflow_id}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    client = Client(args.url)
    if client.cancel(args.workflow_id):
        print(f"cancellation requested for {args.workflow_id}")
    else:
        print(f"{args.workflow_id} is {client.get(args.workflow_id).status()}: nothing to cancel")
    return 0


def _replay(args: argparse.Namespace) -> int:
    if bool(args.workflow_ids) == bool(args.all):
        raise ValueError("name workflow ids, or pass --all (not both)")
    sys.path.insert(0, os.getcwd())
    for module in args.imports:
        importlib.import_module(module)
    store = Client(args.url).store
    reports = replay_many(store, args.workflow_ids or None, finished=args.finished)
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(json.dumps([r.as_dict() for r in reports]))
    else:
        for report in reports:
            verdict = "ok" if report.ok else "MISMATCH" if report.outcome == "mismatch" else "ERROR"
            print(f"{verdict:<8} {report.workflow_id}  ({report.status}, {report.events} events, replay: "
                  f"{report.outcome})")
            if report.problem:
                print(f"         {report.problem}")
        print(f"{len(reports) - len(bad)} of {len(reports)} workflows replay with the current code")
    return 1 if bad else 0


def _list(args: argparse.Namespace) -> int:
    client = Client(args.url)
    rows = [h.describe() for h in client.list(status=args.status)]
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{row['workflow_id']:<30} {row['status']:<10} {row['name']}")
    return 0


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
