"""`durable demo` (the README's first command) end to end: real processes, embedded Redis, SIGKILL.

Runs the demo as a user would, shortened, from a directory that is not the
checkout, and checks what it claims: the worker was killed in the middle of a
call, the second worker resumed there (re-sending only that call, deduped),
nothing was delivered twice, and no process outlived it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from durable.connection import URL_ENV

MARKER = "DURABLE_DEMO_TEST_MARKER"


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (every process the demo started inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_demo_resumes_after_the_kill_and_sends_nothing_twice(tmp_path):
    marker = f"{MARKER}={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != URL_ENV}
    env[MARKER] = marker.split("=", 1)[1]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "durable", "demo", "--days", "2", "--day-seconds", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert elapsed < 60, f"the shortened demo took {elapsed:.0f} s"

    # the webhooks: a forged one refused, a redelivered one starts nothing, the closed one signals
    assert "webhook 'opened' signed with the wrong secret -> 401" in out
    assert "-> 202: started workflow pr-octo/widgets-42" in out
    assert "the same webhook redelivered -> 200: already monitored" in out
    assert "webhook 'closed' (merged by bob) -> 202" in out

    # the kill, mid-call, then the resume
    timeline = out[out.index("timeline ("):out.index("resumed where it stopped")]
    lines = timeline.splitlines()
    killed = next(i for i, line in enumerate(lines) if "KILLED with SIGKILL" in line)
    assert "Reminder, day 2" in lines[killed]
    held = next(i for i, line in enumerate(lines) if "answer held back" in line)
    assert held < killed and "[worker 1," in lines[held]
    after = "\n".join(lines[killed:])
    assert "DUPLICATE: answered from the first call" in after and "[worker 2," in after
    assert "[worker 1," not in after and "create_channel" not in after  # nothing before the kill ran again
    assert timeline.count("-> slack conversations.create") == 1
    assert "workflow completed" in after

    assert re.search(r"worker 2 \(pid \d+\) re-sent 1 call \(seq \d+ chat\.postMessage, deduped by its key\)", out)
    assert "writes: 7 received, 6 distinct idempotency keys, duplicates deduped: 1, applied: 6; " \
           "duplicates delivered: 0" in out
    assert "one of each, nothing sent twice" in out
    assert ("result: {'pull_request': 'octo/widgets#42', 'channel': 'pr-octo-widgets-42', 'reminders': 2, "
            "'outcome': 'merged', 'noticed_by': 'webhook'}") in out
    assert "examples/pr_monitor/README.md" in out  # how to go further

    time.sleep(0.5)  # a killed process group may take a moment to be gone
    assert _processes_with(marker) == [], "the demo left processes running"
    assert not (tmp_path / ".durable").exists()  # nothing written where it was run
