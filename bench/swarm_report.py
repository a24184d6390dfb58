"""What bench.swarm writes: the docs/benchmarks.md tables (medians per experiment, where
the time went, every node per run) and the two plots (completion-time CDF against the
Kumar & Ross bound, send rates over time in the median flash run).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.swarm_measure import Experiment, NodeStats, rates

if TYPE_CHECKING:
    from bench.swarm_driver import Bench

# tbf charges link-layer frames: 66 bytes of Ethernet/IP/TCP headers per 8948-byte
# payload at MTU 9000 (TCP timestamps on), so 1 copy of F reads as ~1.0074 F.
HEADER_OVERHEAD: Final = (9000 + 14) / (9000 - 52)


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
