"""The simulator report's tables: one row per scenario (against its bound), the goals'
verdict, slow nodes' split, the real-code call costs, and the rows against Kraken's
published simulations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.sim.labels import size, version_label
from bench.sim.model import MAX_LINKS_PER_BLOB, Result, fetch_config
from peer.mesh import fetch


def ratio(x: float, bound: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f} ({x / bound:.2f}×)"


HEAD = (
    "| scenario | code | p50 s (× bound) | p99 s | max s | done | origin egress / F "
    "| origin re-fetches | first P2P piece | hedges / endgame | wasted / N·F | links/node (max) "
    "| simulator wall |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def row(label: str, r: Result) -> str:
    c, b = r.counters, r.bound
    done = f"{r.times.size}/{r.cfg.nodes}"
    if r.left_early:
        done += f" ({r.left_early} left)"
    if r.unfinished:
        done += f", stopped at {r.sim_time:.0f} s"
    p2p = f"{c['first_p2p_at']:.1f} s" if c["pieces_from_peers"] else "never"
    wasted = c["wasted_bytes"] / (r.cfg.size * r.cfg.nodes)
    maxv = float(r.times.max()) if r.times.size else math.nan
    return (
        f"| {label} | {version_label(r.cfg)} | {ratio(r.pct(50), b)} | {ratio(r.pct(99), b)} "
        f"| {ratio(maxv, b)} | {done} | {r.origin_bytes / r.cfg.size:.2f} "
        f"| {c['origin_duplicate']:.0f} | {p2p} | {c['hedges']:,.0f} / {c['endgame']:,.0f} "
        f"| {wasted:.2%} | {2 * c['links'] / r.cfg.nodes:.0f} ({c['links_max']:.0f}) "
        f"| {r.wall / 60:.1f} min |"
    )


def verdict(r: Result) -> str:
    s = r.summary()
    stop = f"{r.unfinished} of {r.cfg.nodes} unfinished when stopped at {r.sim_time:.1f} s"
    done = r.times.size / r.cfg.nodes

    def check(q: float, goal: float) -> tuple[bool, str]:
        if done < q / 100:
            return False, stop
        value = r.pct(q) / r.bound
        return value <= goal, f"{value:.2f}×"

    checks = [
        ("p50 ≤ 1.2× bound", *check(50, 1.2)),
        ("p99 ≤ 1.5× bound", *check(99, 1.5)),
        ("origin egress ≤ 1.2 F", s["origin/F"] <= 1.2, f"{s['origin/F']:.2f} F"),
    ]
    return "; ".join(
        f"{name}: **{'met' if ok else 'missed'}** ({value})" for name, ok, value in checks
    )


def slow_split(r: Result) -> str:
    """p50 and max of fast and of slow nodes, each against its own F/d."""
    slow = round(r.cfg.nodes * r.cfg.slow_fraction)
    if r.ids.size != r.times.size or not slow:
        return "(per-node split not recorded)"
    parts = []
    for name, mask, down in (
        ("fast nodes", r.ids >= slow, r.cfg.down),
        ("slow nodes", r.ids < slow, r.cfg.down * r.cfg.slow_factor),
    ):
        t = r.times[mask]
        if t.size:
            own = r.cfg.size / down
            parts.append(
                f"{name} p50 {float(np.median(t)):.1f} s ({float(np.median(t)) / own:.2f}× their "
                f"F/d), max {float(t.max()):.1f} s ({float(t.max()) / own:.2f}×)"
            )
    return "; ".join(parts)


def costs_table(r: Result) -> str:
    lines = [
        "| real-code call | calls | µs per call | share of wall |",
        "| --- | --- | --- | --- |",
    ]
    for name, (calls, secs) in r.costs.items():
        if calls:
            lines.append(
                f"| `{name}` | {calls:,} | {1e6 * secs / calls:,.0f} | {secs / r.wall:.0%} |"
            )
    return "\n".join(lines)


def shipped_constants() -> str:
    cfg = fetch_config(0)
    return (
        f"`ORIGIN_SLOTS` = {cfg.origin_slots}, `LEASE_TTL` = {fetch.LEASE_TTL:g} s, "
        f"`initial_rate` = {cfg.initial_rate / 1e6:g} MB/s, `per_peer` = {cfg.per_peer}, "
        f"`window` = {cfg.window}, `hedge_factor` = {cfg.hedge_factor:g}, "
        f"`MAX_LINKS_PER_BLOB` = {MAX_LINKS_PER_BLOB}, lookups every "
        f"{fetch.LOOKUP_INTERVAL:g} s for {2 * MAX_LINKS_PER_BLOB} holders"
    )


#: Kraken's published simulations (uber/kraken tools/bin/simulation, README figures):
#: 4 MB pieces, 10 pieces per peer per round up and down; "ideal" is F / piece rate.
KRAKEN: tuple[tuple[str, str, str, str], ...] = (
    ("random 5-regular graph", "5,000 × 500 MB", "–", "1.36 (17 vs 12.5 rounds)"),
    ("random 5-regular graph", "1,000 × 10 GB", "1.18 (294/250)", "1.19 (298/250)"),
    ("generated graph (5–20 conns)", "5,000 × 500 MB", "–", "1.44 (18/12.5)"),
    ("generated graph (5–20 conns)", "1,000 × 10 GB", "1.19 (297/250)", "1.54 (384/250)"),
)


def kraken_table(rows: Sequence[tuple[str, Result]]) -> str:
    lines = [
        "| system and run | N × F | p50 / ideal | last / ideal |",
        "| --- | --- | --- | --- |",
        *(f"| Kraken simulator, {g} | {nf} | {p50} | {last} |" for g, nf, p50, last in KRAKEN),
        "| Kraken production benchmark (5 origins; p99 1.8×) | 2,600 × 3 GB | 1.0 | 2.2 (p99.9) |",
    ]
    for label, r in rows:
        lines.append(
            f"| shoal simulator, {label} | {r.cfg.nodes:,} × {size(r.cfg.size)} "
            f"| {r.pct(50) / r.bound:.2f} | {r.times.max() / r.bound:.2f} |"
            if r.times.size
            else f"| shoal simulator, {label} | {r.cfg.nodes:,} × {size(r.cfg.size)} | – | – |"
        )
    return "\n".join(lines)


def table(results: dict[str, tuple[str, Result]], keys: Sequence[str]) -> str:
    rows = [row(results[k][0], results[k][1]) for k in keys if k in results]
    return "\n".join([HEAD, *rows])


def result_of(results: dict[str, tuple[str, Result]], key: str) -> Result | None:
    return results[key][1] if key in results else None
