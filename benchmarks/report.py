"""Writing a run down: ``<timestamp>.json``, ``latest.json``, ``latest.md`` and the PNG plots.

``latest.json`` merges scenario by scenario: a run with ``--only`` replaces the
scenarios it ran and keeps the others from the previous latest run (each
scenario carries the time of the run that measured it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, have

README = REPO_ROOT / "benchmarks" / "README.md"
_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


def write(run: dict[str, Any], out: Path, *, update_readme: bool) -> list[Path]:
    """Write ``run`` under ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = run["started"].replace(":", "").replace("-", "")
    written = [out / f"{stamp}.json"]
    written[0].write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")

    latest_path = out / "latest.json"
    latest = _merge(latest_path, run)
    latest_path.write_text(json.dumps(latest, indent=2, ensure_ascii=False) + "\n")
    written.append(latest_path)

    table = markdown(latest)
    (out / "latest.md").write_text(table)
    written.append(out / "latest.md")
    written += plots(latest, out)
    if update_readme and README.exists():
        _update_readme(table)
        written.append(README)
    return written


def _merge(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    merged = json.loads(json.dumps(run))
    if not path.exists():
        return merged
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return merged
    if previous.get("quick") != run.get("quick"):
        return merged  # never mix a smoke run with a full one
    for name, scenario in previous.get("scenarios", {}).items():
        merged["scenarios"].setdefault(name, scenario)
    return merged


def _mark(met: Any) -> str:
    return {True: "✅", False: "❌"}.get(met, "—")


def _cell(text: Any) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def markdown(run: dict[str, Any]) -> str:
    env = run.get("environment", {})
    lines = [
        f"### Benchmark results ({'QUICK smoke run, not for the record' if run.get('quick') else 'full run'})",
        "",
        f"Run {run['started']} on {env.get('cpus', '?')} CPUs ({env.get('platform', '?')}), Python "
        f"{env.get('python', '?')}, durable {env.get('durable', '?')} at {env.get('commit', '?')}, rq "
        f"{env.get('rq', '?')}, redis-py {env.get('redis_py', '?')} ({env.get('redis_parser', '?')}), "
        f"redis-server {env.get('redis_server', '?')}; data on {env.get('scratch_filesystem', '?')} "
        f"({env.get('scratch_dir', '?')}). Medians of {run.get('reps', '?')} repetitions, durable and peers "
        "side by side in the same run; the machine is shared and noisy, so read the ratios.",
        "",
        "| scenario | durable | peer (version, durability) | peer figure | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes: list[str] = []
    for name, scenario in run.get("scenarios", {}).items():
        if scenario.get("status") != "ok":
            lines.append(f"| {_cell(scenario.get('title', name))} | {scenario.get('status')}: "
                         f"{_cell(scenario.get('reason', ''))} | | | | | — |")
            continue
        for row in scenario.get("rows", []):
            lines.append("| " + " | ".join(_cell(row.get(key)) for key in
                                           ("metric", "durable", "peer", "peer_figure", "ratio", "target"))
                         + f" | {_mark(row.get('met'))} |")
        notes += [f"{name}: skipped {reason}" for reason in scenario.get("skipped", [])]
        if scenario.get("run") and scenario["run"] != run["started"]:
            notes.append(f"{name}: measured in the run of {scenario['run']}")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += ["", "Plots: `step_cost_vs_history.png` (cost per step vs history length, cached vs uncached), "
                  "`throughput_vs_workers.png`"
              + (", `scaling_vs_workers.png`" if "scaling" in run.get("scenarios", {}) else "") + ".", ""]
    return "\n".join(lines)


def _update_readme(table: str) -> None:
    text = README.read_text()
    start, end = _MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return
    README.write_text(pattern.sub(lambda _: f"{start}\n{table}\n{end}", text))


def plots(run: dict[str, Any], out: Path) -> list[Path]:
    """The PNGs, from the series the scenarios recorded; nothing when matplotlib is missing."""
    if not have("matplotlib"):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")

    def style(ax: Any) -> None:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if str(value)[0] in "25" else ""))
        ax.grid(True, which="both", alpha=0.3)

    written: list[Path] = []
    scenarios = run.get("scenarios", {})
    warm = scenarios.get("warm_step", {}).get("series", {}).get("step_cost_vs_history")
    cold = scenarios.get("cold_replay", {}).get("series", {}).get("replay_per_activity")
    if warm:
        fig, axes = plt.subplots(1, 2 if cold else 1, figsize=(11 if cold else 6, 4.2), squeeze=False)
        ax = axes[0][0]
        for kind, points in warm.items():
            xs = sorted(int(k) for k in points)
            ax.plot(xs, [points[str(x)] * 1e3 for x in xs], marker="o", label=f"durable step, {kind}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("history length (recorded activities)")
        ax.set_ylabel("ms per queued step")
        ax.set_title("Warm step cost vs history length")
        style(ax)
        ax.legend()
        if cold:
            ax = axes[0][1]
            for key, points in cold.items():
                xs = sorted(int(k) for k in points)
                ax.plot(xs, [points[str(x)] * 1e6 for x in xs], marker="o", label=key)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("history length (recorded activities)")
            ax.set_ylabel("µs per recorded activity")
            ax.set_title("Cold replay in the engine (offline)")
            style(ax)
            ax.legend()
        fig.tight_layout()
        path = out / "step_cost_vs_history.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    tp = scenarios.get("throughput", {}).get("series", {}).get("throughput_vs_workers")
    if tp:
        rates = tp["activities_per_second"]
        xs = sorted(int(k) for k in rates)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.plot(xs, [rates[str(x)] for x in xs], marker="o", label="durable (measured)")
        ax.plot(xs, [rates[str(xs[0])] * x / xs[0] for x in xs], linestyle="--", label="linear from 1 worker")
        ax.plot(xs, [0.8 * rates[str(xs[0])] * x / xs[0] for x in xs], linestyle=":", label="0.8 × linear (target)")
        ax.set_xlabel("worker processes")
        ax.set_ylabel("activities / s (20 ms I/O each)")
        ax.set_title("Throughput vs workers")
        ax.set_xticks(xs)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "throughput_vs_workers.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    sc = scenarios.get("scaling", {}).get("series", {}).get("scaling_vs_workers")
    if sc:
        written.append(_scaling_plot(plt, sc, out))
    return written


def _scaling_plot(plt: Any, sc: dict[str, Any], out: Path) -> Path:
    """Throughput vs worker processes beside the CPU it took, with the two caps: this box's
    CPUs and one Redis primary (estimated)."""
    rates = sc["activities_per_second"]
    xs = sorted(int(k) for k in rates)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(xs, [rates[str(x)] for x in xs], marker="o", label="durable (measured)")
    left.plot(xs, [rates[str(xs[0])] * x / xs[0] for x in xs], linestyle="--", label="linear from 1 worker")
    left.axhline(sc["cpu_cap"], color="grey", linestyle=":",
                 label=f"this box's {sc['cpus']} CPUs (CPU per activity)")
    left.axhline(sc["ceiling_estimate"], color="red", linestyle="-.",
                 label=f"one Redis primary at {sc.get('headroom', 0.7):.0%} of a core (estimate)")
    left.set_xscale("log", base=2)
    left.set_xticks(xs, [str(x) for x in xs])
    left.set_xlabel("worker processes")
    left.set_ylabel("activities / s (20 ms I/O each)")
    left.set_title("Throughput vs workers")
    left.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    right.plot(xs, [sc["cores_busy"][str(x)] for x in xs], marker="o", label="all processes (cores busy)")
    right.plot(xs, [sc["redis_main_thread"][str(x)] for x in xs], marker="s", label="redis-server's main thread")
    right.axhline(sc["cpus"], color="grey", linestyle=":", label=f"{sc['cpus']} CPUs")
    right.set_xscale("log", base=2)
    right.set_xticks(xs, [str(x) for x in xs])
    right.set_xlabel("worker processes")
    right.set_ylabel("cores")
    right.set_title("CPU during those rounds")
    right.grid(True, alpha=0.3)
    right.legend(fontsize="small")
    fig.tight_layout()
    path = out / "scaling_vs_workers.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
