"""Flash crowd: N nodes on shaped links pull one new blob at once (issue 4's benchmark).

Run: ``.venv/bin/python -m bench.swarm [--nodes 8] [--size-mib 256] [--rate-mbit 160]
[--runs 3] [--mode flash|rolling|both] [--no-write]``

Hosts (``bench.netns``: one network namespace each, one bridge, every uplink shaped to
the same U with tbf, MTU 9000): the origin (``docker-registry`` holding one random blob
of F bytes), the tracker (``shoal tracker``) and N nodes (``shoal peer``). Each run:

* **plain server** (reference): every node's host curls the blob straight from the
  origin at once, no P2P: ≈ N·F/U;
* **flash crowd**: fresh tracker and nodes (empty caches); every node's host curls the
  blob *through its own node* at the same moment, like a runtime pulling a new image;
* **rolling**: fresh tracker and nodes; node k starts at k·S with S = ``--stagger``·F/U
  (default F/U/2), i.e. while the node before it is half done. A rollout that waited for
  each node to finish would only test sharing finished blobs (what Spegel already does);
  starting mid-download makes in-progress sharing and the origin leases do the work, which
  is where "everything goes to the origin" happens. Its origin egress should be one copy.

Completion times come from the wall clock around each curl (started together from a
common t0). Origin egress is read from the kernel: tbf's "Sent N bytes" on the origin's
uplink, before and after. The lower bound (Kumar & Ross 2006) is
max{F/u_s, F/d_min, N·F/(u_s + Σu_i)} = F/U here (u_s = u_i = U; downlinks unshaped).
Medians over ``--runs`` runs go to docs/benchmarks.md, the CDF plot to docs/img/.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.netns import Procs, Testbed, sh
from bench.report import write_section

ROOT: Final = Path(__file__).resolve().parents[1]
IMG_DIR: Final = ROOT / "docs" / "img"
SHOAL: Final = Path(sys.executable).parent / "shoal"
REPO: Final = "library/bench"
ORIGIN_PORT: Final = 5000
TRACKER_PORT: Final = 5052
API_PORT: Final = 5050
P2P_PORT: Final = 5051
READY_TIMEOUT: Final = 60.0
# tbf charges link-layer frames: 66 bytes of Ethernet/IP/TCP headers per 8948-byte
# payload at MTU 9000 (TCP timestamps on), so 1 copy of F reads as ~1.0074 F.
HEADER_OVERHEAD: Final = (9000 + 14) / (9000 - 52)

REGISTRY_CONFIG: Final = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}:{port}
  secret: shoal-bench-secret
"""

_METRIC = re.compile(r"^(shoal_[a-z0-9_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$", re.M)
_SUMMARY = re.compile(r"(\d+) bytes, (\d+) from the origin, (\d+) from (\d+) peers")


# -- measurements ---------------------------------------------------------------------------


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


# -- the bench ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.n = args.nodes
        self.size = args.size_mib * 1024 * 1024
        self.rate = args.rate_mbit * 1e6 / 8  # U in bytes/s
        self.bound = self.size / self.rate  # Kumar & Ross: F/u_s dominates (see module doc)
        self.names = [f"n{i}" for i in range(1, self.n + 1)]
        self.bed = Testbed(["origin", "tracker", *self.names], rate_mbit=args.rate_mbit)
        self.procs = Procs()
        self.digest = ""
        self.origin = self.bed.hosts["origin"].addr
        self.tracker = self.bed.hosts["tracker"].addr
        # everything must be over by then, or the node failed: 3x a plain server's time
        self.timeout = 3 * self.n * self.bound + 60

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def curl(self, host: str, url: str, *, timeout: float = 10.0) -> str | None:
        """GET ``url`` from inside ``host``: the body, or None on any failure."""
        result = subprocess.run(
            self.bed.cmd(host, ["curl", "-sf", "--max-time", str(timeout), url]),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 10,
            check=False,
        )  # fmt: skip
        return result.stdout if result.returncode == 0 else None

    def wait(self, what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")
            time.sleep(0.2)

    # -- origin ----------------------------------------------------------------------------

    def start_origin(self) -> None:
        root = self.work / "origin"
        (root / "storage").mkdir(parents=True)
        config = root / "config.yml"
        config.write_text(
            REGISTRY_CONFIG.format(root=root / "storage", addr=self.origin, port=ORIGIN_PORT)
        )
        proc = self.procs.start(
            self.bed.cmd("origin", ["docker-registry", "serve", str(config)]),
            log=root / "registry.log",
        )
        base = f"http://{self.origin}:{ORIGIN_PORT}"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}"
                )
            return self.curl("origin", f"{base}/v2/") is not None

        self.wait("docker-registry", up)
        # one random blob, pushed over HTTP from inside the origin's host (loopback there)
        blob = self.work / "blob"
        digest = hashlib.sha256()
        with blob.open("wb") as out:
            for _ in range(self.size // (1 << 20)):
                chunk = os.urandom(1 << 20)
                digest.update(chunk)
                out.write(chunk)
        self.digest = "sha256:" + digest.hexdigest()
        head = sh(self.bed.cmd("origin", ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST",
                                          f"{base}/v2/{REPO}/blobs/uploads/"]))  # fmt: skip
        location = re.search(r"(?im)^location:\s*(\S+)", head)
        if location is None:
            raise RuntimeError(f"no Location in the upload answer: {head}")
        url = location.group(1)
        url = url if url.startswith("http") else base + url
        url += ("&" if "?" in url else "?") + f"digest={self.digest}"
        code = sh(self.bed.cmd("origin", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                          "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                                          "--data-binary", f"@{blob}", url]), timeout=300)  # fmt: skip
        if code.strip() != "201":
            raise RuntimeError(f"blob upload answered {code}")
        blob.unlink()
        self.log(f"origin {base} holds {self.digest[:19]}… ({self.size} bytes)")

    # -- swarm -----------------------------------------------------------------------------

    def start_swarm(self, label: str) -> dict[str, subprocess.Popen[bytes]]:
        """A fresh tracker and N fresh nodes (empty caches); waits until all are linked up."""
        logs = self.work / "logs" / label
        logs.mkdir(parents=True)
        procs: dict[str, subprocess.Popen[bytes]] = {}
        tracker = f"{self.tracker}:{TRACKER_PORT}"
        procs["tracker"] = self.procs.start(
            self.bed.cmd("tracker", [str(SHOAL), "tracker", "--listen", tracker, "--no-mdns"]),
            log=logs / "tracker.log",
        )
        self.wait("tracker", lambda: self.curl("tracker", f"http://{tracker}/healthz") is not None)
        level = "debug" if self.args.debug else "info"
        for name in self.names:
            addr = self.bed.hosts[name].addr
            data = self.work / "data" / label / name
            data.mkdir(parents=True)
            procs[name] = self.procs.start(
                self.bed.cmd(name, [
                    str(SHOAL), "peer", "--listen", f"{addr}:{API_PORT}",
                    "--p2p-listen", f"{addr}:{P2P_PORT}", "--advertise-addr", addr,
                    "--tracker", f"http://{tracker}",
                    "--upstream", f"docker.io=http://{self.origin}:{ORIGIN_PORT}",
                    "--data", str(data), "--cache-size", "4GiB", "--node-id", name,
                    "--log-level", level,
                ]),
                log=logs / f"{name}.log",
            )  # fmt: skip
        for name in self.names:
            addr = self.bed.hosts[name].addr

            def healthy(name: str = name, addr: str = addr) -> bool:
                if procs[name].poll() is not None:
                    tail = (logs / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"node {name} exited: {tail}")
                return self.curl(name, f"http://{addr}:{API_PORT}/healthz") is not None

            self.wait(f"node {name} /healthz", healthy)

        def listed() -> bool:
            body = self.curl("tracker", f"http://{tracker}/admin/peers")
            if body is None:
                return False
            ids = {p["peer_id"] for p in json.loads(body)["peers"]}
            return ids >= set(self.names)

        self.wait("tracker lists every node", listed)
        return procs

    def stop_swarm(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        """Nodes first (they say goodbye to the tracker), then the tracker."""
        nodes = [p for name, p in procs.items() if name != "tracker"]
        for proc in nodes:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in nodes:
            self.procs.stop(proc, grace=5.0)
        if "tracker" in procs:
            self.procs.stop(procs["tracker"], grace=5.0)

    def node_stats(self, name: str, proc: subprocess.Popen[bytes], label: str) -> NodeStats:
        stats = NodeStats(cpu=cpu_seconds(proc.pid))
        body = self.curl(name, f"http://{self.bed.hosts[name].addr}:{API_PORT}/metrics") or ""
        for metric, labels, value in _METRIC.findall(body):
            v = float(value)
            if metric == "shoal_mesh_download_bytes_total":
                if 'source="origin"' in labels:
                    stats.from_origin = v
                elif 'source="peers"' in labels:
                    stats.from_peers = v
            elif metric == "shoal_p2p_bytes_total":
                if 'direction="in"' in labels:
                    stats.p2p_in = v
                elif 'direction="out"' in labels:
                    stats.p2p_out = v
            elif metric == "shoal_swarm_links":
                stats.links = v
        log = (self.work / "logs" / label / f"{name}.log").read_text(errors="replace")
        found = _SUMMARY.findall(log)
        if found:
            total, origin, peers, k = found[-1]
            stats.summary = f"{total} bytes, {origin} from the origin, {peers} from {k} peers"
        return stats

    # -- clients ---------------------------------------------------------------------------

    def fetch_all(self, jobs: list[tuple[str, str, float]]) -> tuple[list[Fetch], float, float]:
        """Each (host, url, offset): one curl in ``host`` started at t0 + offset.

        Returns the fetches (times from t0), the wall time of the whole experiment and t0.
        """
        results: list[Fetch | None] = [None] * len(jobs)
        t0 = time.monotonic() + 0.3  # every thread is parked on its start time by then
        fmt = "%{http_code} %{size_download} %{time_starttransfer}"

        def one(i: int, host: str, url: str, offset: float) -> None:
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            fetch = Fetch(host, start - t0)
            results[i] = fetch
            proc = self.procs.start(
                self.bed.cmd(host, ["curl", "-sS", "-o", "/dev/null", "--max-time",
                                    str(int(self.timeout)), "-w", fmt, url]),
                pipe=True,
            )  # fmt: skip
            try:
                out, _ = proc.communicate(timeout=self.timeout + 10)
            except subprocess.TimeoutExpired:
                self.procs.stop(proc)
                fetch.error = "timeout"
                return
            finally:
                self.procs.stop(proc)
            end = time.monotonic()
            words = out.decode(errors="replace").split()
            if proc.returncode != 0 or len(words) < 3:
                fetch.error = f"curl exit {proc.returncode}: {out.decode(errors='replace')[-300:]}"
                return
            code, got, ttfb = words[-3:]
            if code != "200" or int(got) != self.size:
                fetch.error = f"HTTP {code}, {got} bytes"
                return
            fetch.end = end - t0
            fetch.ttfb = float(ttfb)

        threads = [
            threading.Thread(target=one, args=(i, *job), daemon=True) for i, job in enumerate(jobs)
        ]
        for thread in threads:
            thread.start()
        deadline = t0 + max(j[2] for j in jobs) + self.timeout + 30
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        wall = time.monotonic() - t0
        out = []
        for (host, _, offset), fetch in zip(jobs, results, strict=True):
            if fetch is None:
                fetch = Fetch(host, offset, error="never started")
            elif fetch.end is None and not fetch.error:
                fetch.error = "did not finish"
            out.append(fetch)
        return out, wall, t0

    def blob_url(self, name: str) -> str:
        addr = self.bed.hosts[name].addr
        return f"http://{addr}:{API_PORT}/v2/{REPO}/blobs/{self.digest}?ns=docker.io"

    def measure(self, kind: str, jobs: list[tuple[str, str, float]]) -> Experiment:
        before = self.bed.sent_bytes("origin")
        meter = CpuMeter()
        with Sampler(self.bed) as sampler:
            fetches, wall, t0 = self.fetch_all(jobs)
        busy, stalled = meter.busy(), meter.stalled()
        egress = self.bed.sent_bytes("origin") - before
        samples = [(t - t0, counters) for t, counters in sampler.samples]
        return Experiment(kind, fetches, egress, wall, busy, stalled, samples=samples)

    def plain(self) -> Experiment:
        url = f"http://{self.origin}:{ORIGIN_PORT}/v2/{REPO}/blobs/{self.digest}"
        return self.measure("plain", [(name, url, 0.0) for name in self.names])

    def swarm_run(self, kind: str, label: str) -> Experiment:
        procs = self.start_swarm(label)
        try:
            cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
            wait0 = {name: sched_wait(p.pid) for name, p in procs.items()}
            if kind == "flash":
                jobs = [(name, self.blob_url(name), 0.0) for name in self.names]
            else:
                step = self.args.stagger * self.bound
                jobs = [(name, self.blob_url(name), k * step) for k, name in enumerate(self.names)]
            exp = self.measure(kind, jobs)
            time.sleep(1.0)  # the last summary lines and metrics settle
            for name in self.names:
                stats = self.node_stats(name, procs[name], label)
                stats.cpu -= cpu0[name]
                stats.wait = sched_wait(procs[name].pid) - wait0[name]
                exp.nodes[name] = stats
            exp.tracker_cpu = cpu_seconds(procs["tracker"].pid) - cpu0["tracker"]
            return exp
        finally:
            self.stop_swarm(procs)
            shutil.rmtree(self.work / "data" / label, ignore_errors=True)

    def describe(self, exp: Experiment) -> str:
        done = [f.took for f in exp.fetches if f.ok]
        failed = [f"{f.node}: {f.error}" for f in exp.fetches if not f.ok]
        ends = [f.end for f in exp.fetches if f.ok]
        text = (
            f"{exp.kind}: egress {exp.egress / self.size:.3f} F, machine CPU busy {exp.busy:.0%}, "
            f"CPU pressure {fmt_pct(exp.stalled)}, "
            f"wall {exp.wall:.1f}s"
        )
        if ends:
            text += (
                f", completion p50 {statistics.median(ends):.1f}s max {max(ends):.1f}s "
                f"(bound {self.bound:.1f}s); per-download p50 {statistics.median(done):.1f}s"  # type: ignore[type-var]
            )
        if failed:
            text += f"; FAILED {failed}"
        use = self.usage(exp)
        if use:
            text += (
                f"; origin sent {use['origin_bytes'] / self.size:.3f} F in {use['origin_active']:.1f}s "
                f"({use['origin_util']:.0%} of U while active); node uplinks {use['node_util']:.0%} "
                f"of N·U until the last node finished ({use['node_bytes'] / self.size:.2f} F sent)"
            )
        return text

    def usage(self, exp: Experiment) -> dict[str, float]:
        """How busy the shaped uplinks were (from the link counter samples)."""
        if len(exp.samples) < 2:
            return {}
        ends = [f.end for f in exp.fetches if f.end is not None]
        t_end = max(ends) if ends else exp.wall
        first, last = exp.samples[0], exp.samples[-1]
        origin_total = last[1]["origin"][0] - first[1]["origin"][0]
        active = t_end
        for t, counters in exp.samples:  # when the origin had sent 99% of its bytes
            if counters["origin"][0] - first[1]["origin"][0] >= 0.99 * origin_total:
                active = max(t, 1e-3)
                break
        node_bytes = sent_between(exp.samples, self.names, 0.0, t_end)
        return {
            "origin_bytes": origin_total,
            "origin_active": active,
            "origin_util": origin_total / (self.rate * active),
            "node_bytes": node_bytes,
            "node_util": node_bytes / (self.n * self.rate * t_end),
            "t_end": t_end,
        }


# -- report ---------------------------------------------------------------------------------


def completion(exp: Experiment) -> list[float | None]:
    """Per node: the flash crowd's completion from t0 (rolling: from the node's own start)."""
    if exp.kind == "rolling":
        return [f.took for f in exp.fetches]
    return [f.end if f.ok else None for f in exp.fetches]


def worst(values: list[float | None]) -> float:
    """The slowest node; a failed node counts as infinitely late."""
    return max(v if v is not None else float("inf") for v in values)


def p50(values: list[float | None]) -> float:
    xs = [v if v is not None else float("inf") for v in values]
    return statistics.median(xs)


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def fmt_s(value: float | None) -> str:
    return "failed" if value is None or value == float("inf") else f"{value:.1f}"


def plot(bench: Bench, runs: dict[str, list[Experiment]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (.venv/bin/pip install -e '.[bench]')", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    styles = {"flash": ("tab:blue", "shoal flash crowd"), "plain": ("tab:gray", "plain server"),
              "rolling": ("tab:green", "shoal rolling (from each node's start)")}  # fmt: skip
    for kind, (color, label) in styles.items():
        for i, exp in enumerate(runs.get(kind, [])):
            xs = sorted(v for v in completion(exp) if v is not None)
            if not xs:
                continue
            ys = [(k + 1) / bench.n for k in range(len(xs))]
            ax.step([0, *xs], [0, *ys], where="post", color=color, alpha=0.85,
                    label=label if i == 0 else None)  # fmt: skip
    ax.axvline(bench.bound, color="black", ls="--", lw=1,
               label=f"lower bound F/U = {bench.bound:.1f} s")  # fmt: skip
    ax.axvline(1.3 * bench.bound, color="tab:red", ls=":", lw=1, label="1.3 × bound (goal for max)")
    ax.axvline(bench.n * bench.bound, color="tab:gray", ls="--", lw=1,
               label=f"N·F/U = {bench.n * bench.bound:.0f} s (plain server)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("completion time, s (log scale); rolling: from each node's own start")
    ax.set_ylabel("fraction of nodes done")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"{bench.n} nodes, {bench.args.size_mib} MiB blob, every uplink {bench.args.rate_mbit:g} Mbit/s"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def report(
    bench: Bench, runs: dict[str, list[Experiment]], load: tuple[str, str], code: str
) -> str:
    a = bench.args
    F, B, n = bench.size, bench.bound, bench.n
    lines = [
        f"N = {n} nodes + tracker + origin, each in its own network namespace behind one bridge; "
        f"every host's uplink shaped with tbf to U = {a.rate_mbit:g} Mbit/s ({bench.rate / 1e6:.0f} MB/s), "
        f"MTU 9000; downlinks unshaped (bridge ≈ 1.35 GB/s, so F/d_min ≈ 0.2 s is negligible). "
        f"One random blob of F = {a.size_mib} MiB in docker-registry on the origin host; every client is "
        f"`curl` in the node's own host. Lower bound (Kumar & Ross): max{{F/u_s, F/d_min, N·F/(u_s + Σu_i)}} "
        f"= F/U = **{B:.1f} s** (N·F/((N+1)·U) = {n * B / (n + 1):.1f} s). "
        f"Origin egress is tbf's byte counter on the origin's uplink (it counts Ethernet/IP/TCP headers: "
        f"one copy of F reads as ≈ {HEADER_OVERHEAD:.4f} F at MTU 9000). "
        f"Medians of {a.runs} runs; each run starts a fresh tracker and fresh nodes (empty caches). "
        f"Rolling: node k starts at k·{a.stagger:g}·F/U = k·{a.stagger * B:.1f} s, while the one before is mid-download. "
        f"Machine load: load average {load[0]} at start, {load[1]} at the end (2 cores shared with "
        f"other engineers' test runs; the CPU-busy column is the whole machine during the experiment, CPU pressure the share of "
        f"that time some runnable task was waiting for a CPU, from /proc/pressure/cpu). "
        f"Code measured: {code}.",
        "",
        "Goals (issue 4): flash p50 ≤ 1.1× bound, max ≤ 1.3× bound, origin egress ≤ 1.05 F.",
        "",
        "| experiment | p50 s | max s | p50 / bound | max / bound | origin egress / F | machine CPU busy | CPU pressure |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, title in (("flash", "**shoal, flash crowd**"), ("plain", "plain server (no P2P, reference)"),
                        ("rolling", "shoal, rolling (time from each node's start)")):  # fmt: skip
        exps = runs.get(kind, [])
        if not exps:
            continue
        p50s = [p50(completion(e)) for e in exps]
        maxs = [worst(completion(e)) for e in exps]
        egress = statistics.median([e.egress / F for e in exps])
        busy = statistics.median([e.busy for e in exps])
        psi = [e.stalled for e in exps if e.stalled is not None]
        stalled = statistics.median(psi) if psi else None
        mp50, mmax = statistics.median(p50s), statistics.median(maxs)
        lines.append(
            f"| {title} | {fmt_s(mp50)} | {fmt_s(mmax)} | {mp50 / B:.2f}× | {mmax / B:.2f}× "
            f"| {egress:.3f} | {busy:.0%} | {fmt_pct(stalled)} |"
        )
    lines += ["", f"Plain server expectation: N·F/U = {n * B:.0f} s."]
    cores = os.cpu_count() or 1
    for kind in ("flash", "rolling"):
        stats = [st for e in runs.get(kind, []) for st in e.nodes.values()]
        if stats:
            cpu = statistics.median(st.cpu for st in stats)
            wait = statistics.median(st.wait for st in stats)
            lines.append(
                f"CPU ({kind}): each node used a median {cpu:.1f} CPU-s and waited {wait:.1f} s "
                f"runnable for a CPU (schedstat); {n} nodes need ≈ {n * cpu:.0f} CPU-s, "
                f"{n * cpu / (cores * B):.0%} of what {cores} cores offer in one bound period."
            )
    for kind in ("flash",):  # (rolling: staggered on purpose, so link use says little)
        rows = [(i, bench.usage(e)) for i, e in enumerate(runs.get(kind, []))]
        if not any(u for _, u in rows):
            continue
        lines += [
            "",
            f"Where the time goes ({kind}; link counters sampled every 0.5 s on the switch ports):",
            "",
            "| run | origin sent (F) | origin busy until s | origin rate / U while busy | node uplinks / (N·U) until the last node finished | bytes nodes sent (F) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for i, u in rows:
            if u:
                lines.append(
                    f"| {i + 1} | {u['origin_bytes'] / F:.3f} | {u['origin_active']:.1f} | {u['origin_util']:.0%} "
                    f"| {u['node_util']:.0%} | {u['node_bytes'] / F:.2f} |"
                )
    for kind in ("flash", "rolling"):
        exps = runs.get(kind, [])
        if not exps:
            continue
        what = (
            "completion from the common start"
            if kind == "flash"
            else "download time from the node's own start"
        )
        lines += [
            "",
            f"Every node, {kind} ({what}, s; per run):",
            "",
            "| node | "
            + " | ".join(f"run {i + 1}" for i in range(len(exps)))
            + " | last run: from origin (MB) | from peers (MB) | P2P out (MB) | CPU s | waited for a CPU s |",
            "| --- |" + " ---: |" * (len(exps) + 5),
        ]
        for j, name in enumerate(bench.names):
            last = exps[-1].nodes.get(name, NodeStats())
            cells = [fmt_s(completion(e)[j]) for e in exps]
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {last.from_origin / 1e6:.0f} | {last.from_peers / 1e6:.0f} | {last.p2p_out / 1e6:.0f} | {last.cpu:.1f} | {last.wait:.1f} |"
            )
        egress = ", ".join(f"{e.egress / F:.3f}" for e in exps)
        lines += ["", f"Origin egress per run ({kind}): {egress} F."]
        failures = [
            f"run {i + 1} {f.node}: {f.error}"
            for i, e in enumerate(exps)
            for f in e.fetches
            if not f.ok
        ]
        if failures:
            lines.append("Failed: " + "; ".join(failures) + ".")
    return "\n".join(lines)


def plot_timeline(bench: Bench, exp: Experiment, path: Path) -> bool:
    """Send rates over time in one flash run: origin, node uplinks, nodes done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    t, origin = rates(exp.samples, ["origin"])
    ax.plot(t, [v / 1e6 for v in origin], color="tab:red", label="origin uplink")
    t, nodes = rates(exp.samples, bench.names)
    ax.plot(t, [v / 1e6 / bench.n for v in nodes], color="tab:blue", label="node uplinks (mean)")
    ax.axhline(bench.rate / 1e6, color="black", ls="--", lw=1, label="U")
    ax.axvline(bench.bound, color="black", ls=":", lw=1, label="bound F/U")
    for i, end in enumerate(sorted(f.end for f in exp.fetches if f.end is not None)):
        ax.axvline(
            end, color="tab:green", lw=0.8, alpha=0.6, label="a node finishes" if i == 0 else None
        )
    ax.set_xlabel("seconds from the common start")
    ax.set_ylabel("MB/s sent (link layer)")
    ax.set_title("Flash crowd, median run: who is sending")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def code_state() -> str:
    """The commit measured, and whether the node's code had uncommitted changes."""
    try:
        head = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--", "peer", "tracker"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return "unknown"
    n = len(dirty.splitlines())
    return head + (f" with uncommitted changes in {n} files under peer/ and tracker/" if n else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rate-mbit", type=float, default=160)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=["flash", "rolling", "both"], default="both")
    parser.add_argument("--stagger", type=float, default=0.5,
                        help="rolling: start a node every STAGGER·F/U seconds (default 0.5)")  # fmt: skip
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-server reference")
    parser.add_argument("--debug", action="store_true", help="nodes log at debug level")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--section", default="swarm", help="docs/benchmarks.md section (and image) name"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.swarm needs root (network namespaces)")
    for tool in ("ip", "tc", "curl", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"bench.swarm needs {tool} (scripts/test installs it)")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    work = Path(tempfile.mkdtemp(prefix="shoal-swarm-"))
    bench = Bench(args, work)
    load_start = loadavg()
    code = code_state()
    runs: dict[str, list[Experiment]] = {}
    kinds = ["flash", "rolling"] if args.mode == "both" else [args.mode]
    try:
        bench.log(f"work dir {work}; load average {load_start}; namespaces shoal{bench.bed.tag}-*")
        bench.bed.up()
        bench.start_origin()
        for r in range(1, args.runs + 1):
            if not args.no_plain:
                exp = bench.plain()
                runs.setdefault("plain", []).append(exp)
                bench.log(f"run {r} " + bench.describe(exp))
            for kind in kinds:
                exp = bench.swarm_run(kind, f"run{r}-{kind}")
                runs.setdefault(kind, []).append(exp)
                bench.log(f"run {r} " + bench.describe(exp))
                for name, stats in exp.nodes.items():
                    bench.log(
                        f"  {name}: {stats.summary or 'no summary line'}; links {stats.links:.0f}, "
                        f"p2p out {stats.p2p_out / 1e6:.0f} MB, cpu {stats.cpu:.1f}s, "
                        f"waited for a CPU {stats.wait:.1f}s"
                    )
    finally:
        bench.procs.stop_all()
        bench.bed.down()
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()
    body = report(bench, runs, (load_start, load_end), code)
    out = IMG_DIR if not args.no_write else Path(tempfile.gettempdir())
    img, timeline = out / f"{args.section}-cdf.png", out / f"{args.section}-timeline.png"
    if runs and plot(bench, runs, img):
        body += f"\n\n![completion-time CDF vs the bound]({os.path.relpath(img, ROOT / 'docs')})"
        print(f"plot: {img}")
    flash = [e for e in runs.get("flash", []) if any(f.ok for f in e.fetches)]
    if flash:
        median_run = sorted(flash, key=lambda e: p50(completion(e)))[len(flash) // 2]
        if plot_timeline(bench, median_run, timeline):
            body += f"\n\n![send rates over time, median flash run]({os.path.relpath(timeline, ROOT / 'docs')})"
            print(f"plot: {timeline}")
    print(body)
    if not args.no_write:
        command = (
            f".venv/bin/python -m bench.swarm --nodes {args.nodes} --size-mib {args.size_mib} "
            f"--rate-mbit {args.rate_mbit:g} --runs {args.runs} --mode {args.mode}"
        )
        if args.stagger != 0.5:
            command += f" --stagger {args.stagger:g}"
        if args.no_plain:
            command += " --no-plain"
        if args.section != "swarm":
            command += f" --section {args.section}"
        title = f"Swarm: {args.nodes} nodes, {args.size_mib} MiB, {args.rate_mbit:g} Mbit/s uplinks"
        write_section(args.section, title, command, body)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
