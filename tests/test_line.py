"""The commit's own connection (durable/line.py): same bytes as redis-py, same errors."""

from __future__ import annotations

import pytest
import redis
from redis.connection import PythonRespSerializer

from durable.line import Line, pack


def test_pack_matches_redis_py():
    args = ["EVALSHA", "abc", 2, "k1", b"k2", 0, "", b"\x00\xffbytes", 1.5, 12345678901234, "ünïcode"]
    expected = b"".join(PythonRespSerializer(6000, redis.connection.Encoder("utf-8", "strict", False).encode)
                        .pack(*args))
    assert pack(args) == expected


def test_pack_refuses_what_redis_py_refuses():
    with pytest.raises(redis.DataError):
        pack(["SET", "k", None])
    with pytest.raises(redis.DataError):
        pack(["SET", "k", True])


def test_scripts_load_when_missing_and_errors_raise(client):
    line = Line(client.conn)
    script = "return {KEYS[1], ARGV[1]}"
    sha = client.conn.register_script(script).sha
    client.conn.script_flush()
    assert line.script(sha, script, ["k"], [b"v"]) == [b"k", b"v"]  # loaded on NOSCRIPT, then run
    with pytest.raises(redis.ResponseError):
        line.script(client.conn.register_script("return redis.call('NOPE')").sha, "return redis.call('NOPE')", [], [])


def test_a_batch_reads_every_reply_even_after_an_error(client):
    line = Line(client.conn)
    assert line.batch(("SET", "a", "1"), ("INCR", "a")) == [b"OK", 2]
    with pytest.raises(redis.ResponseError):
        line.batch(("HSET", "a", "f", "v"), ("SET", "b", "2"))  # a string is not a hash
    assert client.conn.get("b") == b"2"  # the command after the error ran
    assert line.call("GET", "a") == b"2"  # and the connection is in step with its replies
