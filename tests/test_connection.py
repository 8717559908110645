"""Reading Redis URLs: every accepted form, the errors, no secrets in output, and copies RQ makes.

No server is needed: redis-py connects lazily, so a client built from a URL can be
inspected (its pool class, connection class and keyword arguments) without I/O.
"""

from __future__ import annotations

import ssl

import pytest
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection
from rq.cli.helpers import CliConfig
from rq.scheduler import RQScheduler

from durable import cli
from durable.connection import (
    ACCEPTED_FORMS,
    URL_ENV,
    DurableRedis,
    SentinelTarget,
    connect,
    describe,
    redact,
)

SECRET = "s3cr3t-Pw"


def kwargs_of(conn: redis.Redis) -> dict:
    return conn.connection_pool.connection_kwargs


# -- the forms ------------------------------------------------------------------------------------


def test_redis_url_with_acl_user_and_db():
    conn = connect(f"redis://alice:{SECRET}@db.example:6380/3")
    kw = kwargs_of(conn)
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == ("db.example", 6380, 3, "alice",
                                                                                   SECRET)
    assert conn.connection_pool.connection_class is redis.Connection
    assert kw["socket_connect_timeout"] == 5  # durable's default, since the URL did not set one


def test_url_options_override_defaults_and_are_typed():
    kw = kwargs_of(connect("redis://h/0?socket_connect_timeout=1.5&health_check_interval=7&socket_keepalive=yes"))
    assert (kw["socket_connect_timeout"], kw["health_check_interval"], kw["socket_keepalive"]) == (1.5, 7, True)


def test_percent_encoded_password():
    assert kwargs_of(connect("redis://bob:p%40ss%3Aw@h:1/0"))["password"] == "p@ss:w"


def test_rediss_builds_an_ssl_connection_with_the_options():
    url = ("rediss://alice:pw@cache.example:6380/1?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
           "&ssl_certfile=/etc/client.crt&ssl_keyfile=/etc/client.key&ssl_check_hostname=false")
    conn = connect(url)
    assert conn.connection_pool.connection_class is SSLConnection
    made = conn.connection_pool.make_connection()  # built, not connected
    assert isinstance(made, SSLConnection)
    assert made.cert_reqs == ssl.CERT_REQUIRED
    assert (made.ca_certs, made.certfile, made.keyfile) == ("/etc/ca.pem", "/etc/client.crt", "/etc/client.key")
    assert made.check_hostname is False
    assert (made.host, made.port, made.db, made.username) == ("cache.example", 6380, 1, "alice")


def test_rediss_cert_reqs_none():
    made = connect("rediss://h:1/0?ssl_cert_reqs=none").connection_pool.make_connection()
    assert made.cert_reqs == ssl.CERT_NONE


def test_unix_socket_with_db_and_credentials():
    conn = connect(f"unix://alice:{SECRET}@/run/redis/redis.sock?db=2")
    kw = kwargs_of(conn)
    assert conn.connection_pool.connection_class is UnixDomainSocketConnection
    assert (kw["path"], kw["db"], kw["username"], kw["password"]) == ("/run/redis/redis.sock", 2, "alice", SECRET)


def test_sentinel_url():
    conn = connect(f"redis+sentinel://alice:{SECRET}@s1:26380,s2,[::1]:5000/mymaster/4"
                   f"?sentinel_username=watcher&sentinel_password=sp&socket_timeout=3")
    pool = conn.connection_pool
    assert isinstance(conn, DurableRedis)
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master
    assert pool.service_name == "mymaster"
    assert issubclass(pool.connection_class, SentinelManagedConnection)
    assert not issubclass(pool.connection_class, SSLConnection)
    kw = pool.connection_kwargs
    assert (kw["db"], kw["username"], kw["password"], kw["socket_timeout"]) == (4, "alice", SECRET, 3.0)
    assert "sentinel_password" not in kw and "sentinel_username" not in kw
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("s1", 26380), ("s2", 26379), ("::1", 5000)]
    skw = sentinels[0].connection_pool.connection_kwargs
    assert (skw["username"], skw["password"], skw["socket_timeout"]) == ("watcher", "sp", 3.0)


def test_sentinel_db_defaults_to_zero_and_may_be_a_query_option():
    assert kwargs_of(connect("redis+sentinel://s1/svc")).get("db", 0) == 0
    assert kwargs_of(connect("redis+sentinel://s1/svc?db=6"))["db"] == 6


def test_rediss_sentinel_uses_tls_to_the_servers_and_the_sentinels():
    conn = connect("rediss+sentinel://s1/svc?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem")
    pool = conn.connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    assert issubclass(pool.connection_class, SentinelManagedConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    sentinel = pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_class is SSLConnection
    assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(URL_ENV, "redis://envhost:7000/5")
    kw = kwargs_of(connect())
    assert (kw["host"], kw["port"], kw["db"]) == ("envhost", 7000, 5)


def test_a_client_is_used_as_it_is():
    mine = redis.Redis()
    assert connect(mine) is mine


def test_rq_command_line_can_use_the_class():
    """``rq worker --connection-class durable.connection.DurableRedis --url redis+sentinel://...``"""
    config = CliConfig(url="redis+sentinel://s1:26379/svc/2", connection_class="durable.connection.DurableRedis")
    conn = config.connection
    assert isinstance(conn, DurableRedis) and isinstance(conn.connection_pool, SentinelConnectionPool)


# -- errors ---------------------------------------------------------------------------------------

BAD = {
    "http://h": "unknown scheme",
    "localhost:6379": "unknown scheme",
    f"redis://u:{SECRET}@h:1/0?decode_responses=true": "unknown option 'decode_responses'",
    f"redis://u:{SECRET}@h:1/0?ssl_cert_reqs=none": "TLS option",
    "rediss://h?ssl_cert_reqs=maybe": "ssl_cert_reqs must be one of",
    "redis://h?socket_timeout=soon": "socket_timeout",
    "redis://h:99999/0": "Port out of range",
    "redis://h/mymaster": "must be a database number",
    "unix://": "needs the socket's path",
    f"redis+sentinel://u:{SECRET}@s1:26379": "name the Sentinel service",
    "redis+sentinel://s1/svc/zero": "database must be a number",
    "redis+sentinel://s1:port/svc": "bad port",
    "redis+sentinel://s1,,s2/svc": "at least one Sentinel",
    f"redis+sentinel://s1/svc?sentinel_password={SECRET}&foo=1": "unknown option 'foo'",
    "redis+sentinel://[::1/svc": "bad Sentinel address",
}


@pytest.mark.parametrize("url", list(BAD))
def test_bad_urls_say_why_and_list_the_forms_without_secrets(url):
    with pytest.raises(ValueError) as caught:
        connect(url)
    message = str(caught.value)
    assert BAD[url] in message
    assert ACCEPTED_FORMS in message
    assert SECRET not in message
    assert "\n" not in message


def test_cli_bad_url_is_one_line_and_exit_2(capsys):
    code = cli.main(["status", "x", "--url", f"redis://alice:{SECRET}@h:1/0?nope=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("durable: invalid Redis URL 'redis://alice:***@h:1/0?nope=1'")
    assert SECRET not in err


# -- no secrets in output ------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://alice:{SECRET}@h:6380/2", "redis://alice@h:6380/2"),
    (f"redis://:{SECRET}@h/0", "redis://h:6379/0"),
    (f"redis://h/0?password={SECRET}", "redis://h:6379/0"),
    (f"rediss://alice:{SECRET}@h:6380/0?ssl_cert_reqs=none", "rediss://alice@h:6380/0"),
    (f"unix://alice:{SECRET}@/tmp/r.sock?db=3", "unix://alice@/tmp/r.sock?db=3"),
    (f"redis+sentinel://alice:{SECRET}@s1,[::1]:5/svc/1?sentinel_password={SECRET}",
     "redis+sentinel://alice@s1:26379,[::1]:5/svc/1"),
    (f"rediss+sentinel://:{SECRET}@s1:1/svc", "rediss+sentinel://s1:1/svc/0"),
])
def test_describe_hides_passwords(url, shown):
    assert describe(connect(url)) == shown


def test_redact():
    assert redact(f"redis://alice:{SECRET}@h:1/0") == "redis://alice:***@h:1/0"
    assert redact(f"redis+sentinel://:{SECRET}@a:1,b:2/svc?sentinel_password={SECRET}&db=1") == (
        "redis+sentinel://:***@a:1,b:2/svc?sentinel_password=***&db=1")
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact(f"u:{SECRET}@h") == "***"


def test_sentinel_target_repr_hides_the_sentinel_password():
    target = connect(f"redis+sentinel://s1/svc?sentinel_password={SECRET}").connection_pool.connection_kwargs[
        "durable_sentinel"]
    assert isinstance(target, SentinelTarget) and SECRET not in repr(target)


# -- the copies RQ makes (its scheduler clones by class and pool kwargs) ------------------------


@pytest.mark.parametrize("url", [
    f"redis://alice:{SECRET}@h:6380/2",
    f"rediss://alice:{SECRET}@h:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&ssl_check_hostname=false",
    f"unix://alice:{SECRET}@/tmp/r.sock?db=3",
])
def test_tls_and_acl_settings_survive_rqs_copy(url):
    conn = connect(url)
    copy = RQScheduler(["q"], connection=conn).connection
    assert copy.connection_pool is not conn.connection_pool
    assert copy.connection_pool.connection_class is conn.connection_pool.connection_class
    keys = ("host", "port", "path", "db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs",
            "ssl_check_hostname", "socket_connect_timeout")
    assert {k: kwargs_of(copy).get(k) for k in keys} == {k: kwargs_of(conn).get(k) for k in keys}
    original, cloned = conn.connection_pool.make_connection(), copy.connection_pool.make_connection()
    assert type(original) is type(cloned)
    if isinstance(original, SSLConnection):
        assert (cloned.cert_reqs, cloned.ca_certs, cloned.check_hostname) == (ssl.CERT_REQUIRED, "/ca.pem", False)


@pytest.mark.parametrize("url", [
    f"redis+sentinel://alice:{SECRET}@s1:26380,s2:26381/mymaster/3?sentinel_password=sp",
    "rediss+sentinel://s1:26380/mymaster/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem",
])
def test_rqs_copy_of_a_sentinel_client_still_goes_through_sentinel(url):
    conn = connect(url)
    copy = RQScheduler(["q"], connection=conn).connection
    pool = copy.connection_pool
    assert isinstance(copy, DurableRedis)
    assert isinstance(pool, SentinelConnectionPool), "the copy must follow a failover like the original"
    assert pool is not conn.connection_pool
    assert pool.service_name == "mymaster" and pool.is_master
    assert pool.connection_class is conn.connection_pool.connection_class
    addresses = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                 for s in pool.sentinel_manager.sentinels]
    original = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                for s in conn.connection_pool.sentinel_manager.sentinels]
    assert addresses == original
    assert pool.sentinel_manager.sentinel_kwargs == conn.connection_pool.sentinel_manager.sentinel_kwargs
    for key in ("db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs"):
        assert kwargs_of(copy).get(key) == kwargs_of(conn).get(key)
    # The copy's connections ask its own pool (hence the Sentinels) for the primary.
    assert pool.make_connection().connection_pool is pool.proxy
    assert describe(copy) == describe(conn)
