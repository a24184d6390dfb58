"""A cluster of real processes on loopback: ``shoal tracker`` and ``shoal peer`` subprocesses.

Unlike :func:`tests.helpers.node.spawn_node`, these handles survive their process: a test can
SIGKILL one (:meth:`Daemon.kill`), SIGSTOP it (:meth:`Daemon.pause`) and start it again on
the same ports and data directory (:meth:`Daemon.start`), which is what fault-injection
scenarios need. Starting is split from waiting (:func:`start_all`) so that several Python
processes import in parallel instead of one after another.

Everything here is blocking; call it from sync tests (or through ``trio.to_thread``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

from tests.helpers import procs

# Python processes import trio, httpx and hypercorn in about a second; on a loaded CI
# machine with two cores that can be ten times slower.
STARTUP_TIMEOUT: Final = 40.0
DEAD: Final = "http://127.0.0.1:9"  # the discard port: connection refused at once


_http: httpx.Client | None = None


def http() -> httpx.Client:
    """One shared client for probes (``httpx.get`` builds a TLS context per call: ~0.2 s)."""
    global _http
    if _http is None:
        _http = httpx.Client(timeout=5, trust_env=False)
    return _http


class Daemon:
    """One restartable subprocess with a readiness probe on ``GET {url}/healthz``."""

    def __init__(
        self, name: str, args: Sequence[str], url: str, log: Path, *, data: Path | None = None
    ) -> None:
        self.name = name
        self.data = data  # a peer's data directory
        self.args = list(args)
        self.url = url
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> Daemon:
        """Spawn the process (does not wait; see :meth:`wait_ready`)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} still runs"
        self.proc = procs.start(self.args, self.log)
        return self

    def _ready(self) -> bool | None:
        try:
            return True if http().get(f"{self.url}/healthz", timeout=1).status_code == 200 else None
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> Daemon:
        procs.wait_for(self._ready, what=self.name, timeout=timeout, proc=self.proc,
                       log_path=self.log)  # fmt: skip
        return self

    def kill(self) -> int:
        """SIGKILL the process and reap it; returns its exit status (-9)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: sockets stay open, nothing answers (a stalled peer)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Terminate (then kill) whatever is left; idempotent."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
            procs.stop(self.proc)

    def peak_rss_kib(self) -> int:
        """The process's peak resident set size (``VmHWM`` in /proc/PID/status), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/PID/status")

    def log_tail(self) -> str:
        return procs.log_tail(self.log)


def tracker(tmp: Path, *extra: str, port: int | None = None) -> Daemon:
    """A ``shoal tracker`` (memory store, no mDNS) on ``port`` or a free one."""
    port = port or procs.free_port()
    args = [sys.executable, "-m", "tracker", "--listen", f"127.0.0.1:{port}", "--no-mdns", *extra]
    return Daemon("shoal tracker", args, f"http://127.0.0.1:{port}", tmp / "tracker.log")


def peer(
    tmp: Path, name: str, *, tracker: str = "none", upstream: str = DEAD, extra: Sequence[str] = ()
) -> Daemon:
    """A ``shoal peer`` with data in ``tmp/name``, its node id ``name``, fixed free ports.

    The ports are picked once, so a restarted peer comes back where its links expect it.
    """
    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    http, p2p = procs.free_port(), procs.free_port()
    args = [
        sys.executable, "-m", "peer", "peer", "--listen", f"127.0.0.1:{http}",
        "--p2p-listen", f"127.0.0.1:{p2p}", "--data", str(data), "--node-id", name,
        "--tracker", tracker, "--upstream", f"docker.io={upstream}", *extra,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{http}"
    return Daemon(f"shoal peer {name}", args, url, tmp / f"{name}.log", data=data)


@contextmanager
def start_all(*daemons: Daemon) -> Iterator[None]:
    """Start every daemon, wait for all of them, and stop them all on exit."""
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            daemon.wait_ready()
        yield
    finally:
        for daemon in daemons:
            daemon.stop()


def wait_peers(tracker_url: str, count: int, *, timeout: float = 20) -> None:
    """Until the tracker lists at least ``count`` peers."""

    def ready() -> bool | None:
        body = http().get(f"{tracker_url}/admin/peers", timeout=2).json()
        return True if len(body["peers"]) >= count else None

    procs.wait_for(ready, what=f"{count} peers announced", timeout=timeout)


def holders(tracker_url: str, digest: str) -> set[str]:
    """Peers the tracker lists as holding all of ``digest``."""
    resp = http().get(f"{tracker_url}/admin/blobs/{digest}", timeout=2)
    if resp.status_code != 200:
        return set()
    return {h["peer_id"] for h in resp.json()["holders"] if h["complete"]}


def wait_held(tracker_url: str, digest: str, count: int, *, timeout: float = 20) -> None:
    """Until at least ``count`` peers have announced ``digest`` as complete."""

    def ready() -> bool | None:
        return True if len(holders(tracker_url, digest)) >= count else None

    procs.wait_for(ready, what=f"{count} holders of {digest}", timeout=timeout)


def blob_path(name: str, digest: str) -> str:
    return f"/v2/{name}/blobs/{digest}?ns=docker.io"


def verify_cache(data: Path) -> tuple[int, list[Path]]:
    """Re-hash every committed blob under ``data/cache``: ``(good, bad files)``.

    Call it on a stopped node (or one that is not writing): a blob file whose content does
    not hash to its name is a corrupt byte the node could serve.
    """
    good, bad = 0, []
    for path in sorted((data / "cache" / "blobs").glob("*/*/*")):
        if path.name.endswith(".type") or not path.is_file():
            continue
        algorithm = path.parent.parent.name
        with path.open("rb") as file:
            if hashlib.file_digest(file, algorithm).hexdigest() == path.name:
                good += 1
            else:
                bad.append(path)
    return good, bad


def temp_files(data: Path) -> list[Path]:
    """In-progress download files under ``data/cache/tmp``."""
    tmp = data / "cache" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []
