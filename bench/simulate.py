"""Simulate a shoal swarm of 1,000+ nodes on virtual time (real scheduler, real tracker).

Run: ``.venv/bin/python -m bench.simulate --nodes 1000 --size-gib 1`` (one scenario,
printed), ``--validate`` (the configuration of ``bench/swarm.py``: 8 nodes, 256 MiB,
160 Mbit/s uplinks, for comparison with the real shaped swarm), or ``--suite`` (the
scenarios of docs/benchmarks.md: writes its "simulator" section and docs/img/sim-*.png).

The model and what is real in it: ``bench/sim/model.py``. Capacities are given in
Mbit/s of payload; ``--down-mbit 0`` means an unlimited downlink.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.sim.model import Config, Result, Simulation, lower_bound

ROOT: Final = Path(__file__).resolve().parents[1]
IMG: Final = ROOT / "docs" / "img"
MBIT: Final = 1e6 / 8
# bench/swarm.py shapes uplinks with tbf at MTU 9000: 66 header bytes per 8948 of payload
TBF_PAYLOAD: Final = (9000 - 52) / (9000 + 14)

#: What we recommend (see docs/benchmarks.md): each knob is a code change, not a flag.
RECOMMENDED: Final[dict[str, Any]] = {
    "max_links": 10,
    "lease_cap": 8,
    "early_lookup": True,
}


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
    if args.max_links is not None:
        extra["max_links"] = args.max_links
    if args.lease_cap is not None:
        extra["lease_cap"] = args.lease_cap
    if args.lease_renew:
        extra["lease_renew"] = True
    if args.early_lookup:
        extra["early_lookup"] = True
    if args.inflight_cap is not None:
        extra["inflight_cap"] = args.inflight_cap
    return Config(
        nodes=args.nodes, size=size, up=up, down=down, origin_up=origin,
        slow_fraction=args.slow_fraction, slow_factor=args.slow_factor,
        arrival=args.arrival, spread=args.spread, leave_fraction=args.leave_fraction,
        mode=args.mode, origin_rtt=args.origin_rtt, dt=args.dt, replan=args.replan,
        scheduler=parse_sched(args.sched), seed=args.seed, max_time=args.max_time, **extra,
    )  # fmt: skip


def describe(cfg: Config) -> str:
    def rate(x: float) -> str:
        return "∞" if math.isinf(x) else f"{x / MBIT:,.0f}"

    parts = [
        f"N={cfg.nodes}",
        f"F={cfg.size / (1 << 20):,.0f} MiB ({cfg.piece_plan().count} × {cfg.piece_plan().piece_size >> 20} MiB)",
        f"u=d={rate(cfg.up)}" if cfg.up == cfg.down else f"u={rate(cfg.up)} d={rate(cfg.down)}",
        f"u_s={rate(cfg.origin_up)} Mbit/s",
    ]
    if cfg.slow_fraction:
        parts.append(f"{cfg.slow_fraction:.0%} slow (×{cfg.slow_factor:g})")
    if cfg.arrival != "flash":
        parts.append(f"{cfg.arrival} {cfg.spread:g} s")
    if cfg.leave_fraction:
        parts.append(f"{cfg.leave_fraction:.0%} leave")
    if cfg.mode != "mesh":
        parts.append(cfg.mode)
    return ", ".join(parts)


def changes(cfg: Config) -> str:
    base = Config()
    out = [
        f"{f.name}={getattr(cfg, f.name)}"
        for f in dataclasses.fields(Config)
        if f.name
        in ("max_links", "lease_ttl", "lease_renew", "lease_cap", "early_lookup", "inflight_cap")
        and getattr(cfg, f.name) != getattr(base, f.name)
    ]
    out += [f"{k}={v}" for k, v in cfg.scheduler.items()]
    return ", ".join(out) or "as shipped"


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
        f"unfinished {r.unfinished}"
    )
    print(
        "  pieces: {:.0f} from peers, {:.0f} from origin ({:.0f} origin fetches, {:.0f} of a piece "
        "already fetched); {:.0f} lease refusals; {:.0f} hedges, {:.0f} endgame duplicates, "
        "{:.0f} cancelled, {:.2f} F wasted; {:.0f} hash misses; {:.0f} timeouts; "
        "{:.1f} links/node".format(
            c["pieces_from_peers"],
            c["pieces_from_origin"],
            c["origin_fetches"],
            c["origin_duplicate"],
            c["lease_refused"],
            c["hedges"],
            c["endgame"],
            c["cancelled"],
            c["wasted_bytes"] / r.cfg.size,
            c["hash_miss"],
            c["timeouts"],
            2 * c["links"] / r.cfg.nodes,
        )
    )
    print(f"  wall {r.wall:.1f} s for {r.sim_time:.1f} s simulated ({c['steps']:.0f} steps)")
    for name, (calls, secs) in r.costs.items():
        if calls:
            print(
                f"    {name:14s} {calls:>10,} calls  {secs:7.1f} s  {1e6 * secs / calls:8.1f} µs/call"
            )


# -- plots ---------------------------------------------------------------------------------
def plot(results: list[tuple[str, Result]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, r in results:
        times = np.sort(r.times)
        ax1.plot(times / r.bound, np.arange(1, times.size + 1) / r.cfg.nodes, label=label)
        rate = r.egress_series / r.cfg.bucket / MBIT
        ax2.plot(np.arange(rate.size) * r.cfg.bucket, rate, label=label, drawstyle="steps-post")
    ax1.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("completion time / lower bound")
    ax1.set_ylabel("fraction of nodes done")
    ax1.set_title("completion CDF")
    ax1.set_xlim(left=0)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("origin egress (Mbit/s)")
    ax2.set_title("origin egress")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the suite -----------------------------------------------------------------------------
def row(label: str, r: Result) -> str:
    s = r.summary()
    c = r.counters
    return (
        f"| {label} | {changes(r.cfg)} | {s['bound']:.2f} | {s['p50']:.2f} ({s['p50/bound']:.2f}×) "
        f"| {s['p99']:.2f} ({s['p99/bound']:.2f}×) | {s['max']:.2f} ({s['max/bound']:.2f}×) "
        f"| {s['origin/F']:.2f} | {c['origin_duplicate']:.0f} | {c['lease_refused']:,.0f} "
        f"| {c['hedges']:,.0f} / {c['endgame']:,.0f} | {c['wasted_bytes'] / r.cfg.size:.2f} "
        f"| {2 * c['links'] / r.cfg.nodes:.0f} | {r.wall:.0f} |"
    )


HEAD: Final = (
    "| scenario | changes | bound (s) | p50 (s) | p99 (s) | max (s) | origin egress / F "
    "| origin re-fetches | lease refusals | hedges / endgame | wasted / F | links per node | wall (s) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def run(cfg: Config, *, progress: bool = True) -> Result:
    result = Simulation(cfg).run(progress=progress)
    print_result(result)
    return result


def validate(args: argparse.Namespace) -> list[tuple[str, Result]]:
    """bench/swarm.py's configuration: N nodes, F, every uplink U (tbf), downlinks unshaped."""
    u = args.up_mbit * MBIT * TBF_PAYLOAD
    size = int(args.size_mib * (1 << 20))
    base = Config(
        nodes=args.nodes, size=size, up=u, down=math.inf, origin_up=u, origin_rtt=0.002,
        dt=args.dt, replan=args.replan, seed=args.seed,
    )  # fmt: skip
    out = []
    for label, cfg in (
        ("plain server", dataclasses.replace(base, mode="server")),
        ("flash crowd", base),
        ("rolling (k·F/2U)", dataclasses.replace(base, arrival="stagger", spread=size / u / 2)),
    ):
        r = Simulation(cfg).run()
        out.append((label, r))
        print(f"{label}:")
        print_result(r)
    return out


def suite(args: argparse.Namespace) -> None:
    n, size = args.nodes, int(args.size_gib * (1 << 30)) if args.size_gib else 1 << 30
    u = 1000 * MBIT
    base = Config(nodes=n, size=size, up=u, down=u, origin_up=u, replan=args.replan, seed=args.seed)
    rec = dataclasses.replace(base, **RECOMMENDED)
    scenarios: list[tuple[str, str, Config]] = [
        ("flash", "flash crowd, uniform", base),
        ("flash", "flash crowd, uniform", rec),
        ("slow", "flash, 10% slow (×0.1)", dataclasses.replace(rec, slow_fraction=0.1)),
        ("rolling", "rolling over 60 s", dataclasses.replace(rec, arrival="rolling", spread=60.0)),
        ("leave", "flash, 10% leave", dataclasses.replace(rec, leave_fraction=0.1)),
        ("origin", "flash, u_s = 10 Gbit/s", dataclasses.replace(rec, origin_up=10 * u)),
    ]
    if args.only:
        scenarios = [s for s in scenarios if s[0] in args.only]
    results: list[tuple[str, str, Result]] = []
    for key, label, cfg in scenarios:
        print(f"== {label} ({changes(cfg)})", flush=True)
        results.append((key, label, run(cfg)))
    lines = [HEAD] + [row(label, r) for _, label, r in results]
    print("\n".join(lines))
    if args.write:
        plot(
            [(f"{label} ({changes(r.cfg)})", r) for key, label, r in results if key == "flash"],
            IMG / "sim-flash.png",
            f"{describe(base)}: shipped vs recommended",
        )
        plot(
            [(label, r) for key, label, r in results if changes(r.cfg) != "as shipped"],
            IMG / "sim-scenarios.png",
            f"{describe(rec)}; {changes(rec)}",
        )
        (ROOT / "bench" / "sim" / "last-suite.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--lease-renew", action="store_true")
    parser.add_argument("--early-lookup", action="store_true")
    parser.add_argument("--inflight-cap", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-time", type=float, default=3600.0)
    parser.add_argument("--plot", type=Path, default=None, help="write the CDF/egress PNG here")
    parser.add_argument("--validate", action="store_true", help="bench/swarm.py's configuration")
    parser.add_argument("--suite", action="store_true", help="the docs/benchmarks.md scenarios")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument(
        "--write", action="store_true", help="suite: write plots and the docs section"
    )
    args = parser.parse_args(argv)
    if args.validate:
        if args.nodes == 1000:
            args.nodes = 8
        if args.size_mib == 1024.0 and not args.size_gib:
            args.size_mib = 256.0
        if args.up_mbit == 1000.0:
            args.up_mbit = 160.0
        validate(args)
        return 0
    if args.suite:
        suite(args)
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
