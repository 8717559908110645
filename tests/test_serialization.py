"""Payload signing and size limits."""

from __future__ import annotations

import pytest

import durable
from durable.events import ActivityCompleted
from durable.serialization import decode_event, dumps, encode_event, loads
from tests import workflows
from tests.conftest import drain


def test_unsigned_round_trip():
    assert loads(dumps({"a": 1}, "x"), "x") == {"a": 1}


def test_signed_payloads_verify_and_tampering_is_refused(monkeypatch):
    monkeypatch.setenv("DURABLE_SECRET", "s3cret")
    data = dumps({"a": 1}, "x")
    assert data.startswith(b"\x00DSG1") and loads(data, "x") == {"a": 1}
    flipped = data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:]
    with pytest.raises(durable.SignatureError, match="failed its signature check and was not unpickled"):
        loads(flipped, "the thing")


def test_unsigned_payload_is_refused_when_a_secret_is_set(monkeypatch):
    data = dumps({"a": 1}, "x")
    monkeypatch.setenv("DURABLE_SECRET", "s3cret")
    with pytest.raises(durable.SignatureError, match="is not signed"):
        loads(data, "x")


def test_signed_payload_without_the_secret_is_refused(monkeypatch):
    monkeypatch.setenv("DURABLE_SECRET", "s3cret")
    data = dumps(1, "x")
    monkeypatch.delenv("DURABLE_SECRET")
    with pytest.raises(durable.SignatureError, match="is not set in this process"):
        loads(data, "x")


def test_key_rotation_old_key_still_verifies(monkeypatch):
    monkeypatch.setenv("DURABLE_SECRET", "old")
    data = encode_event(ActivityCompleted(seq=3, result="r"))
    monkeypatch.setenv("DURABLE_SECRET", "new, old")
    assert decode_event(data).result == "r"
    monkeypatch.setenv("DURABLE_SECRET", "new")
    with pytest.raises(durable.SignatureError):
        decode_event(data)


def test_payload_limit(monkeypatch):
    monkeypatch.setenv("DURABLE_MAX_PAYLOAD", "1000")
    dumps(b"x" * 500, "small")
    with pytest.raises(durable.PayloadTooLarge, match=r"the big one is \d+ bytes pickled, over the limit of 1000"):
        dumps(b"x" * 2000, "the big one")
    monkeypatch.setenv("DURABLE_MAX_PAYLOAD", "0")
    dumps(b"x" * 5_000_000, "unlimited")


def test_a_tampered_history_entry_holds_the_workflow_without_unpickling(client, monkeypatch):
    monkeypatch.setenv("DURABLE_SECRET", "k1")
    handle = client.start(workflows.sleeper, 3600, workflow_id="tamper")
    drain_once = durable.Worker(["durable"], connection=client.conn, lease_ttl=5)
    drain_once.work(burst=True)
    key = client.store.history_key("tamper")
    entry = client.conn.lindex(key, 1)
    client.conn.lset(key, 1, entry[:-2] + bytes([entry[-2] ^ 0xFF]) + entry[-1:])  # flip a byte in Redis
    with pytest.raises(durable.SignatureError):
        handle.history()
    run_id = client.store.meta("tamper").run_id
    client.store.enqueue([durable.store.Dispatch("durable.runtime.advance", ("tamper", run_id), "durable")])
    durable.Worker(["durable"], connection=client.conn, lease_ttl=5).work(burst=True)
    assert handle.status() == "running"
    assert "failed its signature check" in handle.describe()["held"]


def test_oversized_activity_result_fails_the_activity_without_retry(client, monkeypatch):
    monkeypatch.setenv("DURABLE_MAX_PAYLOAD", "2000")
    handle = client.start(workflows.big_result, 10_000, workflow_id="big")
    assert drain(client, handle) == "completed"
    assert handle.result() == "durable.errors.PayloadTooLarge"
    assert [name for name, _ in workflows.CALLS].count("big") == 1  # not retried


def test_values_pickle_as_cloudpickle_would_where_it_matters():
    """Plain pickle for speed, but never where another process could not load the result."""
    import pickle
    import subprocess
    import sys

    import cloudpickle

    from durable.serialization import _pickle

    plain = {"seq": 3, "args": (1, "x", None), "kwargs": {"a": [1.5, b"b"]}}
    assert _pickle(plain) == cloudpickle.dumps(plain)
    assert pickle.loads(_pickle(lambda x: x + 1))(1) == 2  # pickle refuses lambdas: cloudpickle's bytes
    # A class from __main__ must travel by value: pickle would only name it. Load the bytes in a
    # fresh process, whose __main__ has no such class.
    script = (
        "import sys, pickle\n"
        "from durable.serialization import _pickle\n"
        "class Point:\n"
        "    def __init__(self, x): self.x = x\n"
        "sys.stdout.buffer.write(_pickle(Point(7)))\n"
    )
    data = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True).stdout
    reader = "import sys, pickle; print(pickle.loads(sys.stdin.buffer.read()).x)"
    loaded = subprocess.run([sys.executable, "-c", reader], input=data, check=True, capture_output=True)
    assert loaded.stdout.strip() == b"7"
