"""What bench.swarm measures, and how: per-curl and per-node records, the machine's CPU
meters (/proc/stat, PSI, schedstat) and a sampler of the testbed's link counters.

:class:`Experiment` is one run (plain, flash or rolling) as ``bench.swarm_driver`` records
it and ``bench.swarm_report`` turns into tables and plots.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.netns import Testbed


@dataclass
class Fetch:
    """One curl: times in seconds from the experiment's common t0."""

    node: str
    start: float
    end: float | None = None
    ttfb: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.end is not None and not self.error

    @property
    def took(self) -> float | None:
        return None if self.end is None or self.error else self.end - self.start


@dataclass
class NodeStats:
    """What a node says about itself after the experiment."""

    from_origin: float = 0.0
    from_peers: float = 0.0
    p2p_in: float = 0.0
    p2p_out: float = 0.0
    links: float = 0.0
    cpu: float = 0.0  # seconds of CPU the node process used
    wait: float = 0.0  # seconds its threads were runnable but waited for a CPU
    summary: str = ""  # its "N bytes, X from the origin, Y from K peers" log line


@dataclass
class Experiment:
    kind: str  # "plain", "flash", "rolling"
    fetches: list[Fetch]
    egress: int  # bytes sent by the origin's uplink
    wall: float
    busy: float  # fraction of all CPUs busy during the experiment (whole machine)
    stalled: float | None = None  # fraction of the time some task waited for a CPU (PSI)
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    tracker_cpu: float = 0.0
    # (seconds from t0, per host (sent, received) link-layer bytes)
    samples: list[tuple[float, dict[str, tuple[int, int]]]] = field(default_factory=list)


class CpuMeter:
    """Fraction of the machine's CPU time that was busy, and of wall time that some
    runnable task waited for a CPU (PSI ``some``), since it was made."""

    def __init__(self) -> None:
        self._start = self._read()
        self._psi = self._read_psi()
        self._t = time.monotonic()

    @staticmethod
    def _read_psi() -> int | None:
        try:
            line = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(line.rsplit("total=", 1)[1])  # microseconds

    def stalled(self) -> float | None:
        now = self._read_psi()
        if now is None or self._psi is None:
            return None
        return (now - self._psi) / 1e6 / (time.monotonic() - self._t)

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def busy(self) -> float:
        busy, total = self._read()
        d_total = total - self._start[1]
        return (busy - self._start[0]) / d_total if d_total else 0.0


class Sampler:
    """Every host's link counters every ``period`` seconds, in a thread."""

    def __init__(self, bed: Testbed, period: float = 0.5) -> None:
        self.bed = bed
        self.period = period
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                self.samples.append((at, self.bed.link_bytes()))
            except (RuntimeError, subprocess.TimeoutExpired, ValueError):
                pass  # one lost sample
            self._stop.wait(self.period)


def rates(
    samples: list[tuple[float, dict[str, tuple[int, int]]]], hosts: list[str]
) -> tuple[list[float], list[float]]:
    """Mid-interval times and the hosts' summed send rate (bytes/s) between samples."""
    times, values = [], []
    for (t1, a), (t2, b) in itertools.pairwise(samples):
        if t2 > t1:
            times.append((t1 + t2) / 2)
            values.append(sum(b[h][0] - a[h][0] for h in hosts if h in a and h in b) / (t2 - t1))
    return times, values


def sent_between(
    samples: list[tuple[float, dict[str, tuple[int, int]]]], hosts: list[str], t1: float, t2: float
) -> float:
    """Bytes the hosts sent between the samples nearest to t1 and t2."""
    if not samples:
        return 0.0
    a = min(samples, key=lambda s: abs(s[0] - t1))[1]
    b = min(samples, key=lambda s: abs(s[0] - t2))[1]
    return sum(b[h][0] - a[h][0] for h in hosts if h in a and h in b)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_wait(pid: int) -> float:
    """Seconds a live process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
