"""Real processes for tests: start one with its output in a log file, wait for it, stop it.

Every wait here has an absolute deadline, and :func:`stop` always ends the process (terminate,
then kill), so a broken daemon fails a test with its log tail instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import httpx
import pytest

T = TypeVar("T")

# How much of a daemon's log to quote when it fails to come up: enough for the Go stack
# trace's first lines or the config error, short enough to read in a pytest report.
LOG_TAIL_BYTES: Final = 4000


class ProcessFailed(RuntimeError):
    """A helper process exited early or did not become ready before its deadline."""


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (bind port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log file, decoded leniently ("" if there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    return data[-limit:].decode(errors="replace")


def start(
    args: Sequence[str | Path], log_path: Path, *, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, with stdout and stderr appended to ``log_path``.

    The process gets no stdin, and its own process group so that :func:`stop` can reach
    any children it spawns (containerd shims, podman's conmon).
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Terminate ``proc``'s process group, wait up to ``grace`` seconds, then kill it."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Kill whatever is left of the group even when the leader exited by itself.
    _signal_group(proc, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=grace)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something other than None, and return that.

    Raises:
        ProcessFailed: ``proc`` exited first, or ``timeout`` seconds passed; the message
            carries the tail of ``log_path``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if proc is not None and proc.poll() is not None:
            raise ProcessFailed(
                f"{what}: process exited with {proc.returncode} before it was ready\n"
                + (log_tail(log_path) if log_path else "")
            )
        if time.monotonic() > deadline:
            raise ProcessFailed(
                f"{what}: not ready after {timeout:.0f}s\n"
                + (log_tail(log_path) if log_path else "")
            )
        time.sleep(interval)


def http_ok(url: str) -> Callable[[], bool | None]:
    """A :func:`wait_for` check: True once ``GET url`` answers 200, None until then."""

    def check() -> bool | None:
        try:
            return True if httpx.get(url, timeout=1).status_code == 200 else None
        except httpx.TransportError:
            return None

    return check


def run(
    args: Sequence[str | Path], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client command to completion with captured text output and a hard timeout.

    Does not check the exit status: callers assert on it so that the failure message can
    quote stderr.
    """
    return subprocess.run(
        [str(a) for a in args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A one-screen account of a finished command, for assertion messages."""
    cmd = " ".join(result.args) if isinstance(result.args, list) else str(result.args)
    return (
        f"$ {cmd}\nexit {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-LOG_TAIL_BYTES:]}\n"
        f"--- stderr ---\n{result.stderr[-LOG_TAIL_BYTES:]}"
    )


def require_binary(binary: str, package: str) -> None:
    """Skip the calling test when ``binary`` is not installed, saying which package has it.

    With ``SHOAL_REQUIRE_BINARIES=1`` in the environment (``scripts/test`` sets it after
    installing the packages) a missing binary fails the test instead, so CI cannot go green
    by skipping every real-runtime test.
    """
    if shutil.which(binary) is not None:
        return
    reason = f"{binary} is not installed (apt-get install {package})"
    if os.environ.get("SHOAL_REQUIRE_BINARIES") == "1":
        pytest.fail(reason + " and SHOAL_REQUIRE_BINARIES=1")
    pytest.skip(reason)


def require_root(what: str) -> None:
    """Skip the calling test unless we are root (private containerd and rootful podman)."""
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (rootful daemon with a private state directory)")
