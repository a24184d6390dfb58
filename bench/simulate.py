"""Simulate a shoal swarm of 1,000+ nodes on virtual time (real scheduler, real tracker).

Run: ``.venv/bin/python -m bench.simulate --nodes 1000 --size-gib 1`` (one scenario,
printed), ``--validate`` (the configuration of ``bench/swarm.py``: 8 nodes, 256 MiB,
160 Mbit/s uplinks, for comparison with the real shaped swarm), or ``--suite`` (the
scenarios of docs/benchmarks.md; with ``--write`` it writes the "simulator" section and
docs/img/sim-*.png).

The suite caches each scenario's result in ``--cache`` (``/tmp/shoal-sim/<key>.json``);
``--reuse`` takes a cached result whose scenario is unchanged, ``--only KEY...`` runs some,
and ``--cached-only`` writes the section from what is cached, listing the rest as left
out. A 1,000-node scenario takes 8-15 minutes of one core, a 200-node one 1-3 minutes;
run at most one per core. ``bench.sim.model.VERSIONS`` names the two code versions the
section compares (``before`` and ``shipped``).

The model and what is real in it: ``bench/sim/model.py``. Capacities are given in
Mbit/s of payload; ``--down-mbit 0`` means an unlimited downlink.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.report import write_section
from bench.sim import costs as sim_costs
from bench.sim import report
from bench.sim.model import (
    BEFORE,
    BEFORE_COMMIT,
    SHIPPED,
    VERSIONS,
    Config,
    Result,
    Simulation,
    lower_bound,
)
from bench.sim.report import changes, describe

ROOT: Final = Path(__file__).resolve().parents[1]
IMG: Final = ROOT / "docs" / "img"
MBIT: Final = 1e6 / 8
# bench/swarm.py shapes uplinks with tbf at MTU 9000: 66 header bytes per 8948 of payload
TBF_PAYLOAD: Final = (9000 - 52) / (9000 + 14)

#: Every shipped change (``--recommended``): see ``bench.sim.model.VERSIONS``.
RECOMMENDED: Final = SHIPPED


def parse_sched(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value)
    return out


def config_from(args: argparse.Namespace) -> Config:
    size = int(args.size_gib * (1 << 30)) if args.size_gib else int(args.size_mib * (1 << 20))
    up = args.up_mbit * MBIT
    down = args.down_mbit * MBIT if args.down_mbit > 0 else math.inf
    origin = (args.origin_mbit or args.up_mbit) * MBIT
    extra: dict[str, Any] = dict(RECOMMENDED) if args.recommended else {}
    extra["scheduler"] = {**extra.get("scheduler", {}), **parse_sched(args.sched)}
    if args.max_links is not None:
        extra["max_links"] = args.max_links
    if args.lease_cap is not None:
        extra["lease_cap"] = args.lease_cap
    if args.max_links_in is not None:
        extra["max_links_in"] = args.max_links_in
    if args.refuse_recorded:
        extra["lease_refuse_recorded"] = True
    if args.lease_renew:
        extra["lease_renew"] = True
    if args.early_lookup:
        extra["early_lookup"] = True
    if args.inflight_cap is not None:
        extra["inflight_cap"] = args.inflight_cap
    if args.piece_mib is not None:
        extra["piece_size"] = int(args.piece_mib * (1 << 20))
    return Config(
        nodes=args.nodes, size=size, up=up, down=down, origin_up=origin,
        slow_fraction=args.slow_fraction, slow_factor=args.slow_factor,
        arrival=args.arrival, spread=args.spread, leave_fraction=args.leave_fraction,
        mode=args.mode, origin_rtt=args.origin_rtt, dt=args.dt, replan=args.replan,
        seed=args.seed, max_time=args.max_time, max_wall=args.max_wall or math.inf, **extra,
    )  # fmt: skip


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


def plan_of(args: argparse.Namespace) -> list[tuple[str, str, Config]]:
    """The suite's scenarios: (cache key, label, config)."""
    n = args.nodes
    size = int(args.size_gib * (1 << 30)) if args.size_gib else 1 << 30
    u = 1000 * MBIT
    base = Config(
        nodes=n, size=size, up=u, down=u, origin_up=u, replan=args.replan, seed=args.seed,
        max_wall=args.max_wall, max_time=args.max_time,
    )  # fmt: skip
    before = dataclasses.replace(base, **BEFORE)
    shipped = dataclasses.replace(base, **SHIPPED)
    m = max(2, n // 5)  # the sensitivity and ablation rows: 200 of 1,000 nodes
    small = dataclasses.replace(shipped, nodes=m)
    # rolling at 200 nodes: the same arrival rate as 1,000 over 60 s
    roll = dataclasses.replace(small, arrival="rolling", spread=60.0 * m / 1000)
    undo = [  # (key, label, the shipped value of each knob put back as before)
        ("a-lease", "no origin-fetch cap (leases as before)", {"lease_cap": None}),
        (
            "a-links",
            "links uncapped (as before)",
            {"max_links": None, "max_links_in": None, "seeders_accept_all": False},
        ),
        (
            "a-pp4",
            "per_peer 4 (as before)",
            {"scheduler": drop(small, "per_peer") | {"per_peer": 4}},
        ),
        ("a-lookup", "first lookup before our announce (as before)", {"early_lookup": False}),
        ("a-piece", "pieces rounded up (as before)", {"piece_round_down": False}),
    ]
    return [
        ("before", "flash crowd", before),
        ("shipped", "flash crowd", shipped),
        ("slow", "flash crowd, 10% slow nodes (×0.1)", dataclasses.replace(shipped, slow_fraction=0.1)),
        (
            "slow-fix",
            "flash crowd, 10% slow nodes, which leave the origin to others",
            dataclasses.replace(shipped, slow_fraction=0.1, origin_min_down=0.5 * u),
        ),
        (
            "rolling",
            "rolling, arrivals over 60 s",
            dataclasses.replace(shipped, arrival="rolling", spread=60.0),
        ),
        (
            "rolling-fix",
            "rolling, arrivals over 60 s, no lease for a piece a complete node holds",
            dataclasses.replace(shipped, arrival="rolling", spread=60.0, lease_refuse_held=True),
        ),
        (
            "leave",
            "flash crowd, 10% leave mid-transfer",
            dataclasses.replace(shipped, leave_fraction=0.1),
        ),
        (
            "fast-origin",
            "flash crowd, u_s = 10 Gbit/s",
            dataclasses.replace(shipped, origin_up=10 * u),
        ),
        ("s-base", f"{m} nodes, flash crowd", small),
        ("s-before", f"{m} nodes, flash crowd", dataclasses.replace(before, nodes=200)),
        *[(key, f"{m} nodes, {label}", dataclasses.replace(small, **kw)) for key, label, kw in undo],
        (
            "s-capself",
            f"{m} nodes, flash crowd, a capped refusal naming the asker is a refusal",
            dataclasses.replace(first_cut(small), capped_self_refused=True),
        ),
        ("r-base", f"{m} nodes, rolling over {roll.spread:g} s", roll),
        (
            "r-in10",
            f"{m} nodes, rolling over {roll.spread:g} s, a node accepts no more links than it dials",
            dataclasses.replace(roll, max_links_in=None, seeders_accept_all=False),
        ),
        (
            "r-fix",
            f"{m} nodes, rolling over {roll.spread:g} s, no lease for a piece a complete node holds",
            dataclasses.replace(roll, lease_refuse_held=True),
        ),
        (
            "r-wait",
            f"{m} nodes, rolling over {roll.spread:g} s, no request before the first lookup",
            dataclasses.replace(roll, wait_first_lookup=True),
        ),
        (
            "s-mininf",
            f"{m} nodes, flash crowd, with fetch.MIN_INFLIGHT = 4",
            dataclasses.replace(first_cut(small), scheduler={**small.scheduler}),
        ),
        ("s-dt", f"{m} nodes, dt / 2", dataclasses.replace(small, dt=small.step() / 2)),
        ("s-replan", f"{m} nodes, re-plan every step", dataclasses.replace(small, replan=0.0)),
        ("s-exact", f"{m} nodes, exact max-min", dataclasses.replace(small, tol=0.0)),
        ("s-seed", f"{m} nodes, seed 2", dataclasses.replace(small, seed=2)),
        *(
            [("kraken", "5,000 × 500 MB (Kraken's simulation size)",
              dataclasses.replace(shipped, nodes=5000, size=500 * 10**6))]
            if args.kraken else []
        ),
    ]  # fmt: skip


def suite(args: argparse.Namespace, argv: list[str]) -> None:
    """Every scenario of the docs section; results cached in ``--cache`` (``--reuse``)."""
    plan = plan_of(args)
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    results: dict[str, tuple[str, Result]] = {}
    for key, label, cfg in plan:
        if args.write and args.cached_only and cached(cfg, args.cache, key) is None:
            print(f"== {key}: {label}: not run (no cached result), left out", flush=True)
            continue
        print(f"== {key}: {label} ({changes(cfg)})", flush=True)
        results[key] = (label, run(cfg, cache=args.cache, key=key, reuse=args.reuse))
    validation = validation_runs(
        ROOT / "docs" / "benchmarks.md", None, seed=args.seed, cache=args.cache, reuse=args.reuse
    )
    if not args.write:
        return
    costs = sim_costs.table()
    flash = [
        (report.version_label(r.cfg), r)
        for key, (_, r) in results.items()
        if key in ("before", "shipped")
    ]
    if flash:
        plot(flash, IMG / "sim-flash.png", report.describe(flash[-1][1].cfg))
    scen = [
        (label, r)
        for key, (label, r) in results.items()
        if key in ("shipped", "slow", "slow-fix", "rolling", "rolling-fix", "leave", "fast-origin")
    ]
    if scen:
        plot(
            scen,
            IMG / "sim-scenarios.png",
            f"{report.describe(scen[0][1].cfg)}; shipped",
            relative=False,
        )
    left_out = [f"{key} ({label})" for key, label, _ in plan_of(args) if key not in results]
    body = report.body(results, validation, costs, ROOT / "docs" / "benchmarks.md", left_out)
    command = " ".join([".venv/bin/python -m bench.simulate", *argv])
    write_section("simulator", "Swarm simulator: 1,000 nodes on the real scheduler", command, body)
    print(f"wrote the simulator section of docs/benchmarks.md and {IMG}/sim-*.png")


def drop(cfg: Config, key: str) -> dict[str, Any]:
    return {k: v for k, v in cfg.scheduler.items() if k != key}


def main(argv: list[str] | None = None) -> int:
    if argv is None and os.environ.get("PYTHONHASHSEED") is None:
        # the tracker iterates sets of peer ids: pin str hashing so that a run repeats
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "bench.simulate", *sys.argv[1:]])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--size-gib", type=float, default=0.0)
    parser.add_argument("--size-mib", type=float, default=1024.0)
    parser.add_argument("--up-mbit", type=float, default=1000.0, help="node uplink")
    parser.add_argument(
        "--down-mbit", type=float, default=1000.0, help="node downlink (0: unlimited)"
    )
    parser.add_argument(
        "--origin-mbit", type=float, default=0.0, help="origin uplink (default: --up-mbit)"
    )
    parser.add_argument("--slow-fraction", type=float, default=0.0)
    parser.add_argument("--slow-factor", type=float, default=0.1)
    parser.add_argument("--arrival", choices=["flash", "rolling", "stagger"], default="flash")
    parser.add_argument(
        "--spread", type=float, default=0.0, help="rolling: window (s); stagger: gap (s)"
    )
    parser.add_argument("--leave-fraction", type=float, default=0.0)
    parser.add_argument("--mode", choices=["mesh", "server"], default="mesh")
    parser.add_argument("--origin-rtt", type=float, default=0.02)
    parser.add_argument("--dt", type=float, default=None)
    parser.add_argument("--replan", type=float, default=0.005)
    parser.add_argument(
        "--sched", action="append", default=[], metavar="KEY=JSON", help="SchedulerConfig override"
    )
    parser.add_argument("--recommended", action="store_true", help="apply every recommended change")
    parser.add_argument("--max-links", type=int, default=None)
    parser.add_argument("--lease-cap", type=int, default=None)
    parser.add_argument("--max-links-in", type=int, default=None)
    parser.add_argument("--refuse-recorded", action="store_true")
    parser.add_argument("--lease-renew", action="store_true")
    parser.add_argument("--early-lookup", action="store_true")
    parser.add_argument("--inflight-cap", type=int, default=None)
    parser.add_argument("--piece-mib", type=float, default=None, help="what-if piece size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-time", type=float, default=3600.0, help="simulated seconds")
    parser.add_argument("--max-wall", type=float, default=None, help="real seconds")
    parser.add_argument("--plot", type=Path, default=None, help="write the CDF/egress PNG here")
    parser.add_argument(
        "--validate", action="store_true", help="bench/swarm.py's configurations (its sections)"
    )
    parser.add_argument("--section", nargs="*", default=None, help="validate: these swarm sections")
    parser.add_argument("--suite", action="store_true", help="the docs/benchmarks.md scenarios")
    parser.add_argument("--only", nargs="*", default=None, help="suite: these scenario keys")
    parser.add_argument("--kraken", action="store_true", help="suite: add 5,000 × 500 MB")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/shoal-sim"), help="suite results")
    parser.add_argument("--reuse", action="store_true", help="suite: reuse cached results")
    parser.add_argument(
        "--cached-only", action="store_true", help="suite --write: leave out scenarios not cached"
    )
    parser.add_argument(
        "--write", action="store_true", help="suite: write plots and the docs section"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.validate:
        validate(args)
        return 0
    if args.suite:
        if args.max_wall is None:
            args.max_wall = 1800.0  # the shipped code's scheduler is slow at this scale
        if args.max_time == 3600.0:
            args.max_time = 120.0
        suite(args, argv)
        return 0
    cfg = config_from(args)
    print(f"lower bound {lower_bound(cfg):.2f} s; step {cfg.step() * 1e3:.1f} ms", flush=True)
    t0 = time.perf_counter()
    result = run(cfg)
    if args.plot:
        plot([(changes(cfg), result)], args.plot, describe(cfg))
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
