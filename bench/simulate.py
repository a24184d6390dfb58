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
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench.sim.model import SHIPPED, Config, lower_bound
from bench.sim.report import changes, describe

# the run cache, printout, plots and --validate live in bench.sim.runs, the --suite in
# bench.sim.suite
from bench.sim.runs import MBIT, plot, run, validate
from bench.sim.suite import suite

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
