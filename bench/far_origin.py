"""A far origin for the end-to-end benchmark: what it sends, shaped, in a private namespace.

A registry a cluster pulls from is usually far away or rate-limited (the mission's premise),
and on loopback it is neither. With ``--origin-mbit``, the benchmark runs itself again
inside a fresh network namespace (its own loopback: nothing outside it is touched, and
every process of the run, containerd included, lives there) and shapes, on that loopback,
what the origin sends: an htb class matched by the origin's listening port, since every
byte it serves leaves from that port, whoever dialed. All other loopback traffic (a node
serving containerd, nginx, the tracker) goes through an unshaped class. The kernel here
has no netem, so the origin gets a rate limit but no added latency.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

from bench.netns import sh

ENV = "SHOAL_BENCH_NETNS"  # set in the run inside the namespace: its name
_SHAPED = "1:20"
_SENT = re.compile(r"class htb 1:20 .*?Sent (\d+) bytes", re.S)


def inside() -> bool:
    """True in the run that lives in the private namespace."""
    return ENV in os.environ


def run_inside(module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` in a fresh network namespace (loopback up); its exit
    code. The namespace is deleted afterwards, also on failure."""
    ns = f"shoal-e2e-{secrets.token_hex(3)}"
    sh(["ip", "netns", "add", ns])
    try:
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", module, *argv]
        return subprocess.run(cmd, env={**os.environ, ENV: ns}, check=False).returncode
    finally:
        sh(["ip", "netns", "del", ns], check=False)


def shape(port: int, rate_mbit: float) -> None:
    """Limit what the origin listening on ``port`` sends to ``rate_mbit`` (only inside)."""
    if not inside():
        raise RuntimeError("shaping the loopback is only done in the benchmark's own namespace")
    tc = ["tc"]
    sh([*tc, "qdisc", "replace", "dev", "lo", "root", "handle", "1:", "htb", "default", "10"])
    for classid, rate in (("1:10", "100gbit"), (_SHAPED, f"{rate_mbit}mbit")):
        sh([*tc, "class", "add", "dev", "lo", "parent", "1:", "classid", classid, "htb",
            "rate", rate, "burst", "256k", "cburst", "256k", "quantum", "65536"])  # fmt: skip
    sh([*tc, "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
        "u32", "match", "ip", "sport", str(port), "0xffff", "flowid", _SHAPED])  # fmt: skip


def origin_sent() -> int:
    """Bytes the origin has sent so far (the shaped class's counter, headers included)."""
    out = sh(["tc", "-s", "class", "show", "dev", "lo"])
    match = _SENT.search(out)
    if match is None:
        raise RuntimeError(f"no counter for the origin's class in: {out!r}")
    return int(match.group(1))
