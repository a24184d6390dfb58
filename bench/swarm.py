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

This module is the command line; the parts: ``bench.netns`` (the testbed),
``bench.swarm_driver`` (:class:`Bench`: the origin, tracker, nodes and clients of a run),
``bench.swarm_measure`` (records, CPU meters, link sampling) and ``bench.swarm_report``
(tables and plots). Every name this module held before is still importable from here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from bench.netns import Procs, Testbed, sh
from bench.report import write_section
from bench.swarm_driver import (
    API_PORT,
    ORIGIN_PORT,
    P2P_PORT,
    READY_TIMEOUT,
    REGISTRY_CONFIG,
    REPO,
    SHOAL,
    TRACKER_PORT,
    Bench,
)
from bench.swarm_measure import (
    CpuMeter,
    Experiment,
    Fetch,
    NodeStats,
    Sampler,
    cpu_seconds,
    loadavg,
    rates,
    sched_wait,
    sent_between,
)
from bench.swarm_report import (
    HEADER_OVERHEAD,
    completion,
    fmt_pct,
    fmt_s,
    p50,
    plot,
    plot_timeline,
    report,
    worst,
)

__all__ = [  # the names this module held before its split, importable from here as before
    "API_PORT",
    "HEADER_OVERHEAD",
    "IMG_DIR",
    "ORIGIN_PORT",
    "P2P_PORT",
    "READY_TIMEOUT",
    "REGISTRY_CONFIG",
    "REPO",
    "ROOT",
    "SHOAL",
    "TRACKER_PORT",
    "Bench",
    "CpuMeter",
    "Experiment",
    "Fetch",
    "NodeStats",
    "Procs",
    "Sampler",
    "Testbed",
    "code_state",
    "completion",
    "cpu_seconds",
    "fmt_pct",
    "fmt_s",
    "loadavg",
    "main",
    "p50",
    "plot",
    "plot_timeline",
    "rates",
    "report",
    "sched_wait",
    "sent_between",
    "sh",
    "worst",
]

ROOT: Final = Path(__file__).resolve().parents[1]
IMG_DIR: Final = ROOT / "docs" / "img"


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
