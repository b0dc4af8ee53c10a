"""Machines on one machine, for the multi-host tests (imported by tests, not a test module).

A :class:`Network` is a server namespace joined to each host namespace by its own veth pair, with a
private /24 per link (10.213.N.0/24: the server is .1, the host .2) that exists only inside these
namespaces, so no packet leaves them. Each host runs its commands with its own hostname (``unshare
--uts``), so rpztune's same-host recovery (by pid) cannot see across hosts: only heartbeats can.
Everything is torn down by :meth:`Network.close`: processes killed, namespaces deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

SUBNET = "10.213"
TOOLS = ("ip", "unshare", "runuser")


def missing_tools() -> list[str]:
    """The commands the network needs that are not installed."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    """A server namespace and host namespaces, each host on its own veth link to the server."""

    def __init__(self, tag: str) -> None:
        self.tag = tag  # keeps namespace and link names of parallel runs apart (veth names: 15 chars at most)
        self.server = f"rpz{tag}-srv"
        self.hosts: dict[str, int] = {}
        self.procs: list[subprocess.Popen] = []
        _ip("netns", "add", self.server)
        _ip("-n", self.server, "link", "set", "lo", "up")

    def add_host(self, name: str) -> str:
        """Create host ``name`` linked to the server; return the server's address as that host sees it."""
        index = len(self.hosts) + 1
        self.hosts[name] = index
        ns, here, there = self.namespace(name), self.server_link(name), f"rz{self.tag}h{index}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", here, "netns", self.server, "type", "veth", "peer", "name", there, "netns", ns)
        _ip("-n", self.server, "addr", "add", f"{SUBNET}.{index}.1/24", "dev", here)
        _ip("-n", ns, "addr", "add", f"{SUBNET}.{index}.2/24", "dev", there)
        _ip("-n", self.server, "link", "set", here, "up")
        _ip("-n", ns, "link", "set", there, "up")
        return self.server_address(name)

    def namespace(self, name: str) -> str:
        """The network namespace of host ``name``."""
        return f"rpz{self.tag}-{name}"

    def server_link(self, name: str) -> str:
        """The server's end of host ``name``'s link."""
        return f"rz{self.tag}s{self.hosts[name]}"

    def server_address(self, name: str) -> str:
        """The server's address on host ``name``'s link."""
        return f"{SUBNET}.{self.hosts[name]}.1"

    def server_addresses(self) -> list[str]:
        """The server's address on every link."""
        return [self.server_address(name) for name in self.hosts]

    def on_server(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command in the server namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.server, *argv], **kwargs)

    def start(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` on host ``name``, under that host's own hostname, in a new session."""
        command = ["ip", "netns", "exec", self.namespace(name), "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', f"rpz-{name}", *argv]  # fmt: skip
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def kill_host(self, name: str) -> list[int]:
        """SIGKILL every process of host ``name`` (as pulling its power would); return their pids."""
        return self._kill(self.namespace(name))

    def cut(self, name: str) -> None:
        """Pull host ``name``'s cable: the server's end goes down, packets are lost, nothing is refused."""
        _ip("-n", self.server, "link", "set", self.server_link(name), "down")

    def restore(self, name: str) -> None:
        """Plug host ``name``'s cable back in."""
        _ip("-n", self.server, "link", "set", self.server_link(name), "up")

    def close(self) -> None:
        """Kill every process in these namespaces and delete them (whatever state a failed test left)."""
        for ns in [*(self.namespace(name) for name in self.hosts), self.server]:
            self._kill(ns)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for ns in [*(self.namespace(name) for name in self.hosts), self.server]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # deletes its veth ends too

    @staticmethod
    def _kill(ns: str) -> list[int]:
        killed: list[int] = []
        for _ in range(50):  # until none is left: a dying parent may have started a child meanwhile
            found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            pids = [int(pid) for pid in found]
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed.append(pid)
            time.sleep(0.1)
        return killed
