"""Hosts for the multi-host test: Linux network namespaces on one bridge.

``Network`` makes a bridge in the root namespace (the "switch"; it holds the
first address of a private /24, so the test process itself reaches every host)
and one network namespace per host, each joined to the bridge by a veth pair
and given the next address. Pulling a host's cable is ``ip link set <its bridge port> down``: its
processes keep running and keep their sockets, but nothing they send arrives
and nothing reaches them, as when a switch port dies (the host sees NO-CARRIER).

Every name carries the test process's pid (``durable-mh-<pid>-<host>``,
``dmhb<pid>``), so parallel runs do not collide, and ``destroy`` removes
everything (deleting a namespace deletes its veth pair), on success and
failure alike; an ``atexit`` hook is the last resort. Leftovers of a run whose
process no longer exists (a SIGKILLed pytest) are removed, with the processes
still inside them, when the next run starts. Where namespaces cannot be made
(not Linux, not root, no ``ip``, a kernel or container that refuses),
``unavailable()`` says exactly why.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field

__all__ = ["Host", "Network", "NetnsError", "namespaces", "unavailable"]

_PREFIX = "durable-mh"
_NS_RE = re.compile(rf"^{_PREFIX}-(\d+)-")
_LINK_RE = re.compile(r"dmh[bv]p?(\d+)(?:-\d+)?")  # Network.bridge, Network._port
_LIVE: list[Network] = []  # created and not yet destroyed


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has the command and its stderr."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def namespaces() -> list[str]:
    """Names ``ip netns list`` shows."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Delete what an earlier run left behind when its process is gone (SIGKILLed: no
    teardown, no atexit), the processes it left inside its namespaces included."""
    for name in namespaces():
        match = _NS_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", name, check=False)
    # Links too, with or without their namespace's name: a namespace whose killed processes
    # left orphaned TCP sockets lives on, unnamed, for minutes, and its veth pairs with it.
    for link in _links():
        match = _LINK_RE.fullmatch(link)
        if match and not _pid_alive(int(match.group(1))):
            _ip("link", "del", link, check=False)


def _links() -> list[str]:
    """Names of the network interfaces of the root namespace."""
    return re.findall(r"^\d+: ([^:@]+)[@:]", _ip("-o", "link", "show").stdout, re.M)


def unavailable() -> str | None:
    """Why this process cannot make network namespaces with a veth link, or None if it can.

    Tries for real: a throwaway namespace, bridge and veth pair, and a process run inside,
    all removed again.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to create network namespaces with"
    if os.geteuid() != 0:
        return f"creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); running as uid {os.geteuid()}"
    _remove_stale()
    probe = Network(tag="probe")
    try:
        host = probe.create(["x"])[0]
        _ip("netns", "exec", host.netns, sys.executable, "-c", "")
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with a veth link: {exc}"
    finally:
        probe.destroy()
    return None


@dataclass
class Host:
    """One namespace: ``label`` names it in logs, ``address`` is its IP on the bridge."""

    label: str
    netns: str
    address: str
    port: str  # its veth end on the bridge, in the root namespace: the cable to pull

    def run_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class Network:
    """A bridge in the root namespace and one namespace per host on it."""

    tag: str = ""
    pid: int = field(default_factory=os.getpid)
    hosts: list[Host] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None
    _made: list[tuple[str, ...]] = field(default_factory=list)  # undo commands, in creation order

    # Interface names have at most 15 characters: "dmhb" or "dmhv", the tag's first letter, the pid.
    @property
    def bridge(self) -> str:
        return f"dmhb{self.tag[:1]}{self.pid}"

    def _port(self, index: int) -> str:
        return f"dmhv{self.tag[:1]}{self.pid}-{index}"

    @property
    def gateway(self) -> str:
        """The bridge's own address: the root namespace's (the test process's) on this network."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """A 10.x.y.0/24 that no route or address here overlaps (starting from one the pid picks)."""
        text = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
        used = [ipaddress.ip_network(word, strict=False)
                for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text)]
        start = self.pid * 7 + (1 if self.tag else 0)
        for i in range(4096):
            n = (start + i) % 4096
            candidate = ipaddress.IPv4Network(f"10.{200 + n // 256}.{n % 256}.0/24")
            if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
                return candidate
        raise NetnsError("no free 10.x.y.0/24 for the test network")

    def create(self, labels: list[str]) -> list[Host]:
        """The bridge and one namespace per label; returns the hosts."""
        _LIVE.append(self)
        self.subnet = self._free_subnet()
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", "del", self.bridge))
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, label in enumerate(labels):
            netns = f"{_PREFIX}-{self.pid}-{self.tag}{label}"
            _ip("netns", "add", netns)
            self._made.append(("netns", "del", netns))
            port = self._port(i)
            inside = "eth0"
            _ip("link", "add", port, "type", "veth", "peer", "name", inside, "netns", netns)
            self._made.append(("link", "del", port))
            _ip("link", "set", port, "master", self.bridge)
            _ip("link", "set", port, "up")
            address = str(self.subnet.network_address + 2 + i)
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", netns, "link", "set", inside, "up")
            self.hosts.append(Host(label, netns, address, port))
        return self.hosts

    def cut(self, host: Host) -> None:
        """Pull the host's cable: it can no longer reach anything, nor be reached."""
        _ip("link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.port, "up")

    def restore_all(self) -> None:
        """Every cable back in (before killing processes, so their connections close cleanly)."""
        for host in self.hosts:
            _ip("link", "set", host.port, "up", check=False)

    def destroy(self) -> list[str]:
        """Remove everything this network made (idempotent); returns the errors, if any.

        Kill the processes inside first: a namespace whose processes live on
        outlives its name.
        """
        errors = []
        while self._made:
            undo = self._made.pop()
            proc = _ip(*undo, check=False)
            # a veth pair goes with its namespace, so its own `link del` may find nothing
            if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
                errors.append(f"`ip {' '.join(undo)}`: {proc.stderr.strip()}")
        self.hosts = []
        if self in _LIVE:
            _LIVE.remove(self)
        return errors

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run that still exist."""
        names = [n for n in namespaces() if n.startswith(f"{_PREFIX}-{self.pid}-{self.tag}")]
        mine = {self.bridge, *(self._port(i) for i in range(16))}
        names += [name for name in _links() if name in mine]
        return names


@atexit.register
def _destroy_all() -> None:
    for network in list(_LIVE):
        network.destroy()
