"""The simulator section of docs/benchmarks.md (``--suite``): its scenarios (``plan_of``),
run or loaded from the cache, and with ``--write`` the section and docs/img/sim-*.png.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Final

from bench.report import write_section
from bench.sim import costs as sim_costs
from bench.sim import report
from bench.sim.model import BEFORE, SHIPPED, Config, Result
from bench.sim.report import changes
from bench.sim.runs import MBIT, ROOT, cached, first_cut, plot, run, validation_runs

IMG: Final = ROOT / "docs" / "img"


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
