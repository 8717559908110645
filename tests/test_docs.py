"""The docs cannot rot: the README's example is examples/quickstart.py and runs, docs/api.md is
what docs/gen_api.py generates, and every relative link in README.md and docs/*.md resolves."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from durable.connection import URL_ENV, embedded, shutdown_embedded
from durable.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _block(text: str, marker: str, language: str) -> str:
    match = re.search(rf"<!-- {re.escape(marker)}[^>]*-->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
    return match.group(1)


def _load_gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the README's example -------------------------------------------------------------------


def test_the_readme_example_is_examples_quickstart_py():
    shown = _block(README.read_text(), "quickstart: examples/quickstart.py", "python")
    assert shown == (ROOT / "examples" / "quickstart.py").read_text(), (
        "README.md's example and examples/quickstart.py differ: change both together"
    )


def test_the_quickstart_reminds_until_the_closed_signal(capsys):
    from quickstart import remind  # examples/ is on the path (setup.cfg)

    with WorkflowEnvironment() as env:
        handle = env.start(remind, 42, every=3600, workflow_id="pr-42")
        env.signal(handle, "closed", "merged", after=timedelta(hours=2, minutes=30))
        assert env.run(handle) == "#42 merged after 2 reminder(s)"
        key = f"pr-42:{handle.describe()['run_id']}"
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"#pr-42: Please review #42  (key {key}:0)",
        f"#pr-42: Reminder 1: #42 is still open  (key {key}:2)",
        f"#pr-42: Reminder 2: #42 is still open  (key {key}:4)",
    ]


@pytest.mark.integration
def test_the_readme_commands_run_as_shown(tmp_path):
    """The README's shell block, as written, from a copy of the checkout's layout, on the embedded Redis."""
    script = _block(README.read_text(), "quickstart-run", "bash")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "quickstart.py").write_text((ROOT / "examples" / "quickstart.py").read_text())
    env = {k: v for k, v in os.environ.items() if k not in (URL_ENV, "DURABLE_EMBEDDED_DIR")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the `durable` script
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    # Files, not pipes: the embedded redis-server the commands start would hold a pipe open.
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=90)
    finally:
        try:  # the worker and its scheduler share the script's session: nothing may outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        embedded(tmp_path / "examples" / ".durable")  # joins the server the commands used, to stop it
        shutdown_embedded()
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    assert lines[0] == "pr-42"
    assert "signal 'closed' sent to pr-42" in lines
    assert re.search(r"^'#42 merged after [12] reminder\(s\)'$", out, re.M), out
    assert "#pr-42: Please review #42" in out and "#pr-42: Reminder 1: #42 is still open" in out
    assert re.search(r"completed +'#42 merged after", out), out  # the history timeline's last line


# -- the API reference ----------------------------------------------------------------------


def test_docs_api_md_is_generated_from_the_docstrings():
    gen_api = _load_gen_api()
    assert (ROOT / "docs" / "api.md").read_text() == gen_api.render(), (
        "docs/api.md is out of date with the docstrings: run `python docs/gen_api.py` and commit docs/api.md"
    )


# -- links ------------------------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def _outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in _LINK.findall(_outside_code(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{page.relative_to(ROOT)} links to what is not there: {broken}"
