"""The experiment driver of bench.swarm: the origin, tracker and nodes as processes in
the testbed's hosts, the curl clients started on a common t0, and one run measured.

:class:`Bench` owns a :class:`bench.netns.Testbed` (N nodes, the origin, the tracker) and
its :class:`bench.netns.Procs`; ``bench.swarm.main`` brings the testbed up and down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench.netns import Procs, Testbed, sh
from bench.swarm_measure import (
    CpuMeter,
    Experiment,
    Fetch,
    NodeStats,
    Sampler,
    cpu_seconds,
    sched_wait,
    sent_between,
)
from bench.swarm_report import fmt_pct

SHOAL: Final = Path(sys.executable).parent / "shoal"
REPO: Final = "library/bench"
ORIGIN_PORT: Final = 5000
TRACKER_PORT: Final = 5052
API_PORT: Final = 5050
P2P_PORT: Final = 5051
READY_TIMEOUT: Final = 60.0
# tbf charges link-layer frames: 66 bytes of Ethernet/IP/TCP headers per 8948-byte

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
