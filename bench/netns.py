"""A swarm of real hosts on one machine: network namespaces behind one bridge.

The recipe is ``/work/shared/reference/swarm-testbed.md`` (tested there): one namespace
holds the switch (a Linux bridge), every host gets its own namespace and a veth pair whose
host end is the host's uplink, shaped with ``tbf`` (everything the host sends, whatever
port it leaves from). Downlinks are not shaped. Jumbo frames (MTU 9000) on the bridge and
both veth ends cut the kernel's CPU cost of a full swarm about 3x on a small machine, and
make tbf's header overhead ~0.7% instead of ~4.6%.

Names are unique per run (a random tag in every namespace and interface name) and
:meth:`Testbed.down` deletes everything :meth:`Testbed.up` created, also after a partial
``up``. :class:`Procs` starts processes inside hosts (``ip netns exec`` execs, so the pid
we get is the program's) and stops each by its pid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

# Every `ip`/`tc` call is quick; bound it anyway.
CMD_TIMEOUT: Final = 20.0
_SENT = re.compile(r"Sent (\d+) bytes")


def sh(args: list[str], *, timeout: float = CMD_TIMEOUT, check: bool = True) -> str:
    """Run a command to completion; its stdout. Raises with stderr on failure."""
    result = subprocess.run(
        args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"$ {' '.join(args)}\nexit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class Host:
    name: str  # "origin", "tracker", "n1", ...
    ns: str  # its network namespace
    addr: str  # its IPv4 address on the bridge
    dev: str  # its uplink (the veth end inside ns, shaped)
    port: str  # the switch side of the veth


class Testbed:
    """Hosts ``names`` (addresses ``{subnet}.1``, ``.2``, ...) behind one bridge, every
    uplink shaped to ``rate_mbit`` with tbf. Use as a context manager, or call
    :meth:`up` and, in a ``finally``, :meth:`down`."""

    def __init__(
        self, names: list[str], *, rate_mbit: float, mtu: int = 9000, subnet: str = "10.77.0"
    ) -> None:
        if len(names) > 250:
            raise ValueError("at most 250 hosts in one /24")
        self.tag = secrets.token_hex(2)
        self.rate_mbit = rate_mbit
        self.mtu = mtu
        self.switch = f"shoal{self.tag}-sw"
        self.hosts = {
            name: Host(
                name,
                f"shoal{self.tag}-{name}",
                f"{subnet}.{i}",
                f"v{self.tag}h{i}",
                f"b{self.tag}h{i}",
            )
            for i, name in enumerate(names, 1)
        }
        self._namespaces: list[str] = []  # created, in order
        self._root_links: list[str] = []  # veths created in the root namespace

    def __enter__(self) -> Testbed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _netns(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self._namespaces.append(ns)

    def up(self) -> None:
        sw = self.switch
        self._netns(sw)
        sh(["ip", "netns", "exec", sw, "ip", "link", "add", "br0", "type", "bridge"])
        sh(["ip", "netns", "exec", sw, "ip", "link", "set", "br0", "mtu", str(self.mtu)])
        sh(["ip", "netns", "exec", sw, "ip", "link", "set", "br0", "up"])
        for h in self.hosts.values():
            self._netns(h.ns)
            sh(["ip", "link", "add", h.dev, "type", "veth", "peer", "name", h.port])
            self._root_links.append(h.dev)
            sh(["ip", "link", "set", h.dev, "netns", h.ns])
            sh(["ip", "link", "set", h.port, "netns", sw])
            self._root_links.remove(h.dev)  # both ends have left the root namespace
            in_sw = ["ip", "netns", "exec", sw]
            sh([*in_sw, "ip", "link", "set", h.port, "mtu", str(self.mtu)])
            sh([*in_sw, "ip", "link", "set", h.port, "master", "br0"])
            sh([*in_sw, "ip", "link", "set", h.port, "up"])
            in_h = ["ip", "netns", "exec", h.ns]
            sh([*in_h, "ip", "link", "set", h.dev, "mtu", str(self.mtu)])
            sh([*in_h, "ip", "addr", "add", f"{h.addr}/24", "dev", h.dev])
            sh([*in_h, "ip", "link", "set", h.dev, "up"])
            sh([*in_h, "ip", "link", "set", "lo", "up"])
            # the host's uplink: everything it sends
            sh([*in_h, "tc", "qdisc", "add", "dev", h.dev, "root", "tbf",
                "rate", f"{self.rate_mbit}mbit", "burst", "64kb", "latency", "100ms"])  # fmt: skip

    def down(self) -> None:
        """Delete every namespace and stray link this testbed created (idempotent)."""
        for link in self._root_links:
            sh(["ip", "link", "del", link], check=False)
        self._root_links.clear()
        for ns in reversed(self._namespaces):  # deleting a namespace deletes its veth ends
            sh(["ip", "netns", "del", ns], check=False)
        self._namespaces.clear()

    def cmd(self, host: str, args: list[str]) -> list[str]:
        """``args`` run inside ``host``."""
        return ["ip", "netns", "exec", self.hosts[host].ns, *args]

    def link_bytes(self) -> dict[str, tuple[int, int]]:
        """Per host, (bytes it sent, bytes it received), from its switch port's counters
        (link-layer frames): one ``ip`` call for the whole testbed, cheap enough to sample."""
        out = sh(["ip", "-n", self.switch, "-s", "-j", "link", "show"])
        by_port = {h.port: name for name, h in self.hosts.items()}
        found: dict[str, tuple[int, int]] = {}
        for link in json.loads(out):
            name = by_port.get(link.get("ifname", "").partition("@")[0])
            if name is not None:
                stats = link["stats64"]
                # the switch port receives what the host sends
                found[name] = (stats["rx"]["bytes"], stats["tx"]["bytes"])
        return found

    def sent_bytes(self, host: str) -> int:
        """Bytes the host's uplink qdisc has sent (tbf counts link-layer headers too)."""
        h = self.hosts[host]
        out = sh(self.cmd(host, ["tc", "-s", "qdisc", "show", "dev", h.dev]))
        match = _SENT.search(out)
        if match is None:
            raise RuntimeError(f"no 'Sent N bytes' in tc output for {h.dev}: {out!r}")
        return int(match.group(1))


class Procs:
    """Processes we started (thread-safe); each stopped by its pid, its group included."""

    def __init__(self) -> None:
        self._live: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def start(
        self, args: list[str], *, log: Path | None = None, pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int
        out = subprocess.PIPE if pipe else subprocess.DEVNULL
        file = log.open("ab") if log is not None else None
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=file or out,
                stderr=subprocess.STDOUT if file else out, start_new_session=True,
            )  # fmt: skip
        finally:
            if file is not None:
                file.close()
        with self._lock:
            self._live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
        """SIGTERM the process (and its group: it leads one), wait, then SIGKILL."""
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        with self._lock:
            if proc in self._live:
                self._live.remove(proc)

    def stop_all(self) -> None:
        with self._lock:
            live = list(self._live)
        for proc in live:  # TERM everyone first, so they shut down in parallel
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGTERM)
        for proc in live:
            self.stop(proc, grace=5.0)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal a live (not yet reaped) child we started, by its pid."""
    try:
        os.killpg(pid, sig)  # the group this process leads (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
