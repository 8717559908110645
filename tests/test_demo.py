"""`durable demo` (the README's first command) end to end: real processes, embedded Redis, SIGKILL."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from durable.connection import URL_ENV


def test_demo_survives_the_kill_and_sends_nothing_twice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != URL_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "durable", "demo", "--days", "2", "--day-seconds", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "result: '#pr-42: 2 reminders sent'" in out
    assert "worker 1 KILLED with SIGKILL" in out
    assert re.search(r"re-run after the kill: 1 \(pr-42:\w+:5\)", out), out  # the interrupted post ran again
    assert "(duplicates: 0)" in out  # ... but was delivered once, by its idempotency key
    assert "messages delivered by the stand-in service: 4 for 4 distinct activity calls" in out
