"""The ``durable`` command: run workers and look at workflows from the shell.

Every subcommand takes ``--url`` (default ``$DURABLE_REDIS_URL``, else the
embedded Redis under ``./.durable/``). Output is for people by default and
JSON with ``--json`` (every command that reads something, and the
acknowledgements of ``signal`` and ``cancel``), so scripts never parse the
human text. Errors are one line on stderr, ``durable: ...``, and a non-zero
exit: 1 a replay mismatch, 2 anything else (unknown id, bad arguments, code or
Redis out of reach), 3 a failed workflow's result. docs/cli.md has the details.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import redis
from redis.sentinel import MasterNotFoundError

from . import demo, inspection, timeline
from .check import replay_many
from .client import DEFAULT_QUEUE, Client, WorkflowHandle
from .display import call_text, short, table, when
from .errors import DurableError, NonDeterminismError, WorkflowFailed
from .observability import LOG_FORMATS, configure_logging
from .records import Meta
from .registry import Workflow, resolve
from .serialization import loads
from .store import TERMINAL
from .worker import Worker

__all__ = ["main"]

STATUSES = frozenset({"running", *TERMINAL})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already printed on one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    # Every subcommand may unpickle the user's values (history, results, arguments), which
    # name the user's classes: make the working directory importable, as `python -m` does.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return int(args.func(args) or 0)
    except WorkflowFailed as exc:  # its str() ends with the worker's traceback: `result --json` prints that
        return _fail(f"workflow {exc.workflow_id!r} failed: {exc.error_type}: {exc.message}", 3)
    except NonDeterminismError as exc:  # the code here no longer replays the history: like `replay`, 1
        return _fail(str(exc), 1)
    except (DurableError, ValueError, TypeError, ImportError, TimeoutError) as exc:
        return _fail(str(exc), 2)
    except MasterNotFoundError as exc:  # its message ends in a long repr of every Sentinel client
        return _fail(f"no Sentinel named a primary ({str(exc).partition(' : ')[0]}); check that the Sentinels "
                     "run and monitor that service, and --url or $DURABLE_REDIS_URL", 2)
    except redis.AuthenticationError as exc:  # a ConnectionError too, but reachable: say what is wrong
        return _fail(f"Redis refused the credentials ({exc}); check user:password in --url or "
                     "$DURABLE_REDIS_URL", 2)
    except redis.ConnectionError as exc:
        return _fail(f"cannot reach Redis ({exc}); check --url or $DURABLE_REDIS_URL", 2)
    except redis.RedisError as exc:
        return _fail(f"Redis answered with an error: {type(exc).__name__}: {exc}", 2)
    except OSError as exc:  # e.g. the embedded Redis cannot start in this directory
        return _fail(f"{type(exc).__name__}: {exc}", 2)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    print(f"durable: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message holds
    return code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``durable list: error: ...``) like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _json(p: argparse.ArgumentParser, what: str = "machine-readable output") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what}")


def _imports(p: argparse.ArgumentParser, help: str = "import MODULE first (where your workflows live)") -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help=help)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _import_modules(modules: Sequence[str]) -> None:
    """Make the working directory importable (like ``python -m``) and import ``--import`` modules."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"cannot import {module!r} (--import): {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="durable", description="Crash-proof Python workflows on Redis and RQ.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--url", default=None, help="Redis URL (default: $DURABLE_REDIS_URL, else the embedded Redis)")
        return p

    p = command("worker", "run durable workers (RQ SimpleWorkers with the scheduler)")
    p.add_argument("--queue", "-q", action="append", help=f"queue to serve (repeatable; default {DEFAULT_QUEUE})")
    p.add_argument("-n", "--processes", type=int, default=1, help="number of worker processes (default 1)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    _imports(p, "import MODULE first (where your workflows and activities live)")
    p.add_argument("--lease-ttl", type=float, default=None,
                   help="seconds before a dead worker's step is taken over (default $DURABLE_LEASE_TTL or 10)")
    p.add_argument("--stop-timeout", type=float, default=None,
                   help="seconds a SIGTERM waits for the current step before handing it back "
                        "(default $DURABLE_STOP_TIMEOUT or 30)")
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
    p.add_argument("workflow_id", metavar="ID")
    _json(p)
    p.set_defaults(func=_status)

    p = command("result", "wait for a workflow's result and print it (exit 3 if it failed)")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    _json(p)
    p.set_defaults(func=_result)

    p = command("history", "show a workflow's history as a timeline: one line per command")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--iso", action="store_true", help="absolute local times instead of the time since the start")
    p.add_argument("--events", action="store_true", help="one line per raw history event instead")
    p.add_argument("--timeline", action="store_true", help="with --json: the timeline instead of the raw events")
    _imports(p, "import MODULE first (to decode payloads of your own classes)")
    _json(p, "the raw events, as handle.history() returns them (with --timeline: the timeline)")
    p.set_defaults(func=_history)

    p = command("signal", "send a signal to a running workflow")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("name")
    p.add_argument("payload", nargs="?", default=None, help="JSON (a plain word is taken as a string)")
    _json(p, "an acknowledgement as JSON")
    p.set_defaults(func=_signal)

    p = command("cancel", "cancel a running workflow (and its running children)")
    p.add_argument("workflow_id", metavar="ID")
    _json(p, "an acknowledgement as JSON")
    p.set_defaults(func=_cancel)

    p = command("replay", "replay stored histories against the current code (a deploy gate: exit 1 on a mismatch)")
    p.add_argument("workflow_ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every running workflow")
    p.add_argument("--finished", action="store_true", help="with --all: ended workflows too")
    _imports(p)
    _json(p)
    p.set_defaults(func=_replay)

    p = command("inspect", "replay a workflow (running no activity, writing nothing) and show the line its "
                           "generator is suspended at, its local variables and what it waits on")
    p.add_argument("workflow_id", metavar="ID")
    _imports(p)
    _json(p)
    p.set_defaults(func=_inspect)

    p = command("list", "list workflows, oldest first")
    p.add_argument("--status", choices=sorted(STATUSES), default=None)
    p.add_argument("--name", default=None, metavar="NAME",
                   help="only workflows with this name or import path (shell wildcards allowed: 'pr_*')")
    p.add_argument("--limit", type=_positive, default=None, metavar="N", help="only the N newest that match")
    _json(p)
    p.set_defaults(func=_list)
    return parser


def _worker(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise ValueError("-n must be at least 1")
    if args.processes > 1:
        return _worker_pool(args)
    configure_logging(args.log_level, args.log_format)
    _import_modules(args.imports)
    client = Client(args.url)
    worker = Worker(args.queue or [DEFAULT_QUEUE], connection=client.conn, lease_ttl=args.lease_ttl,
                    stop_timeout=args.stop_timeout)
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
    if args.stop_timeout is not None:
        base += ["--stop-timeout", str(args.stop_timeout)]
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
        print(short(handle.result(timeout=args.wait)))
    return 0


def _status(args: argparse.Namespace) -> int:
    info = Client(args.url).get(args.workflow_id).describe()
    if args.json:
        print(json.dumps(info, default=repr))
        return 0
    print(f"{info['workflow_id']}  {info['name']}  {info['status']}")
    fields = [
        ("workflow", info["path"]), ("queue", info["queue"]), ("run", info["run_id"]),
        ("started", when(info["created_at"])), ("updated", when(info["updated_at"])),
        ("custom", None if info["custom_status"] is None else short(info["custom_status"])),
        ("parent", info["parent"]), ("children", ", ".join(info["children"]) or None),
        ("earlier runs", len(info["archived_runs"]) or None),
        ("cancel", "requested" if info["cancel_requested"] and info["status"] == "running" else None),
        ("held", info["held"]),
    ]
    for label, value in fields:
        if value not in (None, ""):
            print(f"  {label:<13}{value}")
    return 0


def _result(args: argparse.Namespace) -> int:
    try:
        value = Client(args.url).get(args.workflow_id).result(timeout=args.timeout)
    except WorkflowFailed as exc:
        if args.json:  # scripts get the error as data, traceback included (and exit 3 all the same)
            print(json.dumps({"workflow_id": exc.workflow_id, "status": "failed", "error": {
                "type": exc.error_type, "message": exc.message, "traceback": exc.traceback}}))
        raise
    print(json.dumps(value, default=repr) if args.json else short(value, 10_000))
    return 0


def _history(args: argparse.Namespace) -> int:
    _import_modules(args.imports)
    client = Client(args.url)
    if args.json and not args.timeline:  # the raw events: what --json printed before the timeline existed
        print(json.dumps(client.get(args.workflow_id).history(), default=repr))
        return 0
    if args.events:
        print("\n".join(_event_line(event) for event in client.get(args.workflow_id).history()))
        return 0
    meta, events = client.store.load(args.workflow_id)  # meta and history of one run, in one read
    if meta is None:
        meta = client.store.meta(args.workflow_id)  # WorkflowNotFound
    started_at = meta.run_started_at or meta.created_at
    entries = timeline.build(events, started_at=started_at, call=_call(meta), name=meta.name, run_id=meta.run_id)
    if args.json:
        print(json.dumps({"workflow_id": meta.workflow_id, "name": meta.name, "status": meta.status,
                          "run_id": meta.run_id, "started_at": started_at, "events": len(events),
                          "timeline": [e.as_dict() for e in entries]}, default=repr))
        return 0
    print(f"{meta.workflow_id}  {meta.name}  {meta.status}  started {when(started_at)}  "
          f"({len(events)} events, run {meta.run_id[:12]})")
    if meta.stuck:
        print(f"  held: {meta.stuck}")
    print("\n".join(timeline.render(entries, origin=started_at, iso=args.iso)))
    return 0


def _call(meta: Meta) -> str:
    """How the run was called, for the timeline's first line; unreadable arguments do not stop it."""
    try:
        args, kwargs = loads(meta.input, f"the arguments of workflow {meta.workflow_id}")
    except DurableError as exc:
        return f"{meta.name}(<arguments not readable here: {type(exc).__name__}>)"
    return call_text(meta.name, args, kwargs)


def _event_line(entry: dict[str, Any]) -> str:
    """One raw event on one line (``history --events``)."""
    moment = dt.datetime.fromtimestamp(entry["time"]).strftime("%H:%M:%S.%f")[:-3]
    seq = "" if entry["seq"] < 0 else entry["seq"]
    rest = {k: v for k, v in entry.items() if k not in ("index", "type", "seq", "time") and v not in (None, {}, ())}
    summary = " ".join(f"{k}={short(v)}" for k, v in rest.items() if k != "traceback")
    return f"{entry['index']:>4}  {moment}  {seq!s:>4}  {entry['type']:<20} {summary}"


def _signal(args: argparse.Namespace) -> int:
    payload = None if args.payload is None else _parse_arg(args.payload)
    client = Client(args.url)
    client.get(args.workflow_id)  # an unknown id: the error that says how to find the right one
    client.signal(args.workflow_id, args.name, payload)
    if args.json:
        print(json.dumps({"workflow_id": args.workflow_id, "signal": args.name, "payload": payload, "sent": True}))
    else:
        print(f"signal {args.name!r} sent to {args.workflow_id}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    client = Client(args.url)
    asked = client.cancel(args.workflow_id)
    status = str(client.get(args.workflow_id).status())
    if args.json:
        print(json.dumps({"workflow_id": args.workflow_id, "cancel_requested": asked, "status": status}))
    elif asked:
        print(f"cancellation requested for {args.workflow_id}")
    else:
        print(f"{args.workflow_id} is {status}: nothing to cancel")
    return 0


def _replay(args: argparse.Namespace) -> int:
    if bool(args.workflow_ids) == bool(args.all):
        raise ValueError("name workflow ids, or pass --all (not both)")
    _import_modules(args.imports)
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


def _inspect(args: argparse.Namespace) -> int:
    _import_modules(args.imports)
    report = inspection.inspect_workflow(Client(args.url).store, args.workflow_id)
    print(json.dumps(report.as_dict()) if args.json else "\n".join(inspection.render(report)))
    return 0


def _list(args: argparse.Namespace) -> int:
    client = Client(args.url)
    store = client.store
    ids = store.workflow_ids()  # oldest first
    if args.status is not None:
        ids = [i for i, s in zip(ids, store.statuses(ids), strict=True) if s == args.status]
    if args.limit is not None and args.name is None:
        ids = ids[-args.limit:]  # no need to read the metas of the rest
    metas = [m for m in store.metas(ids) if m is not None and _named(m, args.name)]
    if args.limit is not None:
        metas = metas[-args.limit:]
    if args.json:
        print(json.dumps([WorkflowHandle(client, m.workflow_id).describe() for m in metas], default=repr))
        return 0
    if not metas:
        print("no workflows" + (" match" if args.status or args.name else ""))
        return 0
    rows = [[m.workflow_id, m.name, m.status + (" (held)" if m.stuck else ""), when(m.created_at),
             when(m.updated_at), _custom_text(m)] for m in metas]
    print("\n".join(table(["ID", "NAME", "STATUS", "STARTED", "UPDATED", "CUSTOM STATUS"], rows)))
    return 0


def _named(meta: Meta, pattern: str | None) -> bool:
    """Whether the workflow's name or import path matches ``--name`` (exactly, or as a wildcard)."""
    return pattern is None or any(fnmatch.fnmatchcase(text, pattern) for text in (meta.name, meta.path))


def _custom_text(meta: Meta) -> str:
    if meta.custom is None:
        return ""
    try:
        return short(loads(meta.custom, "the custom status"), 40)
    except DurableError as exc:  # one unreadable value must not hide the whole listing
        return f"<unreadable: {type(exc).__name__}>"
