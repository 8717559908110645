"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR] [--reps N]``

Runs every scenario (or those named) against durable and the peers installed
here, shows progress, and writes ``<out>/<timestamp>.json``, ``latest.json``,
``latest.md`` and the PNG plots. A peer that is not installed is skipped with
the reason printed; install them all with ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import report
from .common import RESULTS_DIR, Context, Progress, Skip, environment, scratch_dir, stop_all
from .scenarios import cold_replay, inline_step, memory, queued_step, scaling, throughput, warm_step

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (queued_step, inline_step, cold_replay, warm_step, throughput, memory, scaling)
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (under a minute)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME",
                        help=f"run only these scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results directory (default {RESULTS_DIR})")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5; --quick 3)")
    parser.add_argument("--plain", action="store_true", help="plain progress lines even when rich is installed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (worker and peer logs)")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    if reps < 1:
        parser.error("--reps must be at least 1")
    names = args.only or list(SCENARIOS)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    scratch = scratch_dir("run")
    run: dict[str, Any] = {"started": started, "quick": args.quick, "reps": reps, "environment": environment(),
                           "scenarios": {}}
    try:
        with Progress(plain=args.plain) as progress:
            ctx = Context(quick=args.quick, reps=reps, progress=progress, scratch=scratch)
            for name in names:
                run["scenarios"][name] = _run_one(SCENARIOS[name], ctx, started)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        stop_all()
        if args.keep:
            print(f"logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    run["environment"]["loadavg_end"] = list(_loadavg())
    default_out = args.out.resolve() == RESULTS_DIR.resolve()
    written = report.write(run, args.out, update_readme=default_out and not args.quick)
    print(report.markdown(run))
    print("wrote " + ", ".join(str(path) for path in written))
    failed = [name for name, s in run["scenarios"].items() if s["status"] == "error"]
    return 1 if failed else 0


def _run_one(module: ModuleType, ctx: Context, started: str) -> dict[str, Any]:
    begin = time.perf_counter()
    entry: dict[str, Any] = {"title": module.TITLE, "run": started}
    try:
        entry.update(module.run(ctx), status="ok")
    except Skip as exc:
        entry.update(status="skipped", reason=str(exc))
        ctx.progress.note(f"skipped: {exc}")
    except Exception as exc:  # one broken scenario must not lose the others' figures
        entry.update(status="error", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        ctx.progress.note(f"failed: {type(exc).__name__}: {exc}")
    finally:
        ctx.progress.end()
        stop_all()
    entry["seconds"] = round(time.perf_counter() - begin, 2)
    return entry


def _loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)


if __name__ == "__main__":
    raise SystemExit(main())
