"""Regenerate docs/benchmarks.md: every benchmark, one after another, each writing its section.

Run: ``.venv/bin/python -m bench.run_all [--quick] [--only NAME ...]``

Each benchmark is its own module (see the list below) and records its figures, the exact
command, the machine and the date in its own section of docs/benchmarks.md. They run one
at a time so that they do not disturb each other on a small machine; ``--quick`` passes
smaller sizes for a smoke run (the figures are then labelled with that command too).
The swarm benchmark and the far-origin end-to-end run need root (network namespaces).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    # name, full arguments, --quick arguments
    (
        "mirror_throughput",
        ["--size-mib", "512", "--runs", "5"],
        ["--size-mib", "64", "--runs", "2"],
    ),
    ("tracker_load", [], ["--peers", "1000"]),
    (
        "e2e_containerd",
        ["--layers", "5", "--total-mib", "300", "--runs", "5"],
        ["--layers", "3", "--total-mib", "60", "--runs", "1"],
    ),
    (
        "e2e_containerd",  # again, from a far origin (shaped; in its own network namespace)
        ["--layers", "5", "--total-mib", "300", "--runs", "10", "--origin-mbit", "500"],
        ["--layers", "3", "--total-mib", "60", "--runs", "1", "--origin-mbit", "200"],
    ),
    (
        "swarm",
        ["--nodes", "8", "--size-mib", "256", "--runs", "3", "--mode", "both"],
        ["--nodes", "4", "--size-mib", "64", "--runs", "1", "--mode", "flash"],
    ),
    (
        "simulate",  # --reuse: results of earlier runs of the same scenarios, from /tmp/shoal-sim
        ["--suite", "--reuse", "--write"],
        [
            "--suite",
            "--write",
            "--nodes",
            "100",
            "--size-gib",
            "0.25",
            "--cache",
            "/tmp/shoal-sim-quick",
        ],
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", nargs="*", default=None, help="names to run (default: all)")
    args = parser.parse_args()
    failed = []
    for name, full, quick in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        rc = subprocess.run(cmd, check=False).returncode
        print(f"== {name}: exit {rc} after {time.monotonic() - started:.0f}s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
