"""A simulator run and what is kept of it: the result cache in ``--cache`` (``cached``,
``first_cut``, ``run``), its printout and plot, and the configurations of bench/swarm.py's
sections (``--validate``) simulated for comparison with the real shaped swarm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Final

import numpy as np

from bench.sim import report
from bench.sim.model import BEFORE_COMMIT, SHIPPED, VERSIONS, Config, Result, Simulation
from bench.sim.report import changes, describe

ROOT: Final = Path(__file__).resolve().parents[2]
MBIT: Final = 1e6 / 8
# bench/swarm.py shapes uplinks with tbf at MTU 9000: 66 header bytes per 8948 of payload
TBF_PAYLOAD: Final = (9000 - 52) / (9000 + 14)


def print_result(r: Result) -> None:
    s = r.summary()
    c = r.counters
    print(f"scenario: {describe(r.cfg)}; {changes(r.cfg)}")
    print(
        f"  bound {s['bound']:.2f} s  p50 {s['p50']:.2f} s ({s['p50/bound']:.2f}×)  "
        f"p99 {s['p99']:.2f} s ({s['p99/bound']:.2f}×)  max {s['max']:.2f} s ({s['max/bound']:.2f}×)"
    )
    print(
        f"  origin egress {s['origin/F']:.2f} F  finished {r.times.size}  left {r.left_early}  "
        f"unfinished {r.unfinished}  first P2P piece at {c['first_p2p_at']:.2f} s  "
        f"origin requests in flight at most {c['origin_peak']:.0f}"
    )
    print(
        f"  pieces: {c['pieces_from_peers']:.0f} from peers, {c['pieces_from_origin']:.0f} from "
        f"origin ({c['origin_fetches']:.0f} origin fetches, {c['origin_duplicate']:.0f} of a piece "
        f"already fetched); {c['lease_refused']:.0f} lease refusals; {c['hedges']:.0f} hedges, "
        f"{c['endgame']:.0f} endgame duplicates, {c['cancelled']:.0f} cancelled, "
        f"{c['wasted_bytes'] / r.cfg.size:.2f} F wasted; {c['hash_miss']:.0f} hash misses; "
        f"{c['timeouts']:.0f} timeouts; {2 * c['links'] / r.cfg.nodes:.1f} links/node "
        f"(max {c['links_max']:.0f})"
    )
    print(f"  wall {r.wall:.1f} s for {r.sim_time:.1f} s simulated ({c['steps']:.0f} steps)")
    for name, (calls, secs) in r.costs.items():
        if calls:
            print(
                f"    {name:14s} {calls:>10,} calls  {secs:7.1f} s  {1e6 * secs / calls:8.1f} µs/call"
            )


# -- plots ---------------------------------------------------------------------------------
def plot(
    results: list[tuple[str, Result]], path: Path, title: str, *, relative: bool = True
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, r in results:
        times = np.sort(r.times)
        x = times / r.bound if relative else times
        (line,) = ax1.plot(x, np.arange(1, times.size + 1) / r.cfg.nodes, label=label)
        egress = r.egress_series / r.cfg.bucket / MBIT
        t = np.arange(egress.size) * r.cfg.bucket
        ax2.plot(t, egress, color=line.get_color(), drawstyle="steps-post")
        upload = r.upload_series / r.cfg.bucket / MBIT / r.cfg.nodes
        ax2.plot(t, upload, color=line.get_color(), ls="--", lw=0.9, drawstyle="steps-post")
    if relative:
        ax1.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("completion time / lower bound" if relative else "completion time (s)")
    ax1.set_ylabel("fraction of nodes done")
    ax1.set_title("completion CDF")
    ax1.set_xlim(left=0)
    ax1.set_ylim(0, 1.02)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("Mbit/s")
    ax2.set_title("origin egress (solid), mean node upload (dashed)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- runs ----------------------------------------------------------------------------------
def cached(cfg: Config, cache: Path | None, key: str) -> Result | None:
    """The result cached under ``key`` if it is of the scenario ``cfg``."""
    path = cache / f"{key}.json" if cache and key else None
    if path is None or not path.exists():
        return None
    result = Result.from_json(json.loads(path.read_text()))
    limits = {"max_wall": 0.0, "max_time": 0.0}  # a run's limits are not its scenario
    ran = dataclasses.replace(result.cfg, **limits)
    if ran == dataclasses.replace(cfg, **limits):
        return result
    # a row run on the shipped set as first simulated stands for its scenario on shipped,
    # labelled as what it ran (see ``bench.sim.model.FIRST_CUT``)
    if ran == dataclasses.replace(first_cut(cfg), **limits):
        return result
    return None


def first_cut(cfg: Config) -> Config:
    """``cfg`` with the shipped details the first runs lacked set back (if it has them)."""
    late = {k: SHIPPED[k] for k in ("capped_self_refused", "origin_retry_max")}
    if any(getattr(cfg, k) != v for k, v in late.items()):
        return cfg
    if cfg.scheduler.get("min_inflight") != SHIPPED["scheduler"]["min_inflight"]:
        return cfg
    scheduler = {k: v for k, v in cfg.scheduler.items() if k != "min_inflight"}
    return dataclasses.replace(
        cfg, capped_self_refused=False, origin_retry_max=None, scheduler=scheduler
    )


def run(cfg: Config, *, cache: Path | None = None, key: str = "", reuse: bool = False) -> Result:
    """Run ``cfg`` (or load the result cached under ``key``) and print it."""
    path = cache / f"{key}.json" if cache and key else None
    if reuse and (result := cached(cfg, cache, key)) is not None:
        print_result(result)
        return result
    result = Simulation(cfg).run(progress=True)
    print_result(result)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json()))
    return result


def measured_version(commit: str | None) -> str:
    """``before`` if ``commit`` (a swarm section's code) is 054b7a7 or older, else ``shipped``."""
    if commit is None:
        return "shipped"
    older = subprocess.run(
        ["git", "merge-base", "--is-ancestor", commit, BEFORE_COMMIT],
        cwd=ROOT, capture_output=True, check=False,
    )  # fmt: skip
    return "before" if older.returncode == 0 else "shipped"


def validation_configs(
    nodes: int, size_mib: float, up_mbit: float, version: str = "before"
) -> list[tuple[str, Config]]:
    """bench/swarm.py's runs: every uplink U (tbf, MTU 9000), downlinks unshaped."""
    u = up_mbit * MBIT * TBF_PAYLOAD
    size = int(size_mib * (1 << 20))
    knobs = VERSIONS[version][1]
    base = Config(
        nodes=nodes, size=size, up=u, down=math.inf, origin_up=u, origin_rtt=0.002, **knobs
    )  # fmt: skip
    return [
        ("plain server", dataclasses.replace(base, mode="server")),
        ("flash crowd", base),
        (
            "rolling, node k at k·F/2U",
            dataclasses.replace(base, arrival="stagger", spread=size / u / 2),
        ),
    ]


def validation_runs(
    doc: Path, names: list[str] | None, *, seed: int = 1, cache: Path | None = None, reuse: bool = False,
    replan: float = 0.005, dt: float | None = None,
) -> dict[str, list[tuple[str, Result]]]:  # fmt: skip
    """Simulate each bench/swarm.py section's configuration (default 8 × 256 MiB × 160 Mbit/s)."""
    names = names or report.swarm_sections(doc) or ["swarm"]
    out: dict[str, list[tuple[str, Result]]] = {}
    for name in names:
        setup = report.swarm_setup(doc, name) or (8, 256.0, 160.0)
        version = measured_version(report.swarm_code(doc, name))
        out[name] = []
        for label, cfg in validation_configs(*setup, version):
            cfg = dataclasses.replace(cfg, seed=seed, replan=replan, dt=dt)
            print(f"{name}, {label}:")
            key = f"v-{name}-{label.split()[0].rstrip(',')}"
            out[name].append((label, run(cfg, cache=cache, key=key, reuse=reuse)))
    return out


def validate(args: argparse.Namespace) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    if args.section:
        names = args.section
    elif report.swarm_sections(doc):
        names = report.swarm_sections(doc)
    else:
        names = ["swarm"]
    runs = validation_runs(doc, names, seed=args.seed, replan=args.replan, dt=args.dt)
    for name, results in runs.items():
        print(f"\n{name}:")
        print(
            report.validation_table(
                results, report.swarm_rows(doc, name), report.swarm_p50(doc, name)
            )
        )
