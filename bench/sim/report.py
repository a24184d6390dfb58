"""The "simulator" section of docs/benchmarks.md, built from the suite's results."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.sim.model import MAX_LINKS_PER_BLOB, VERSIONS, Config, Result, fetch_config
from peer.mesh import fetch

MBIT = 1e6 / 8


def size(n: int) -> str:
    if n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{n / 1e6:,.0f} MB"


def rate(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x / MBIT:,.0f} Mbit/s"


def describe(cfg: Config) -> str:
    plan = cfg.piece_plan()
    parts = [
        f"N = {cfg.nodes:,}",
        f"F = {cfg.size / (1 << 20):,.0f} MiB ({plan.count} pieces of {plan.piece_size >> 20} MiB)",
        f"u = d = {rate(cfg.up)}"
        if cfg.up == cfg.down
        else f"u = {rate(cfg.up)}, d = {rate(cfg.down)}",
        f"u_s = {rate(cfg.origin_up)}",
    ]
    if cfg.slow_fraction:
        parts.append(f"{cfg.slow_fraction:.0%} of nodes at ×{cfg.slow_factor:g}")
    if cfg.arrival == "rolling":
        parts.append(f"arrivals uniform over {cfg.spread:g} s")
    elif cfg.arrival == "stagger":
        parts.append(f"node k starts at k × {cfg.spread:.2f} s")
    if cfg.leave_fraction:
        parts.append(f"{cfg.leave_fraction:.0%} leave mid-transfer")
    if cfg.mode == "server":
        parts.append("no P2P (plain server)")
    return ", ".join(parts)


WHAT_IFS = (
    "origin_min_down",
    "max_links",
    "max_links_in",
    "seeders_accept_all",
    "lease_refuse_recorded",
    "lease_refuse_held",
    "capped_self_refused",
    "lease_cap",
    "early_lookup",
    "wait_first_lookup",
    "inflight_cap",
    "lease_renew",
    "lease_ttl",
    "piece_size",
    "piece_round_down",
    "origin_retry_max",
)


def _value(name: str, value: Any) -> str:
    if name == "origin_min_down" and value is not None:
        return f"no origin fetches below a {value / MBIT:,.0f} Mbit/s downlink"
    return f"{name}={value}"


def differences(cfg: Config, knobs: dict[str, Any]) -> list[str]:
    """What ``cfg`` changes against a code version's knobs (``bench.sim.model.VERSIONS``)."""
    ref = Config(**knobs)
    out = [
        _value(name, getattr(cfg, name))
        for name in WHAT_IFS
        if getattr(cfg, name) != getattr(ref, name)
    ]
    for key in sorted(set(cfg.scheduler) | set(ref.scheduler)):
        if cfg.scheduler.get(key) != ref.scheduler.get(key):
            out.append(f"{key}={cfg.scheduler.get(key, 'default')}")
    return out


def version_label(cfg: Config) -> str:
    """``shipped``, ``before (as of ...)``, or ``shipped, but ...`` for a what-if."""
    for label, knobs in VERSIONS.values():
        if not differences(cfg, knobs):
            return label
    # the version it differs least from (``shipped`` on a tie)
    label, knobs = min(
        (VERSIONS["shipped"], *VERSIONS.values()), key=lambda v: len(differences(cfg, v[1]))
    )
    return f"{label}, but " + ", ".join(differences(cfg, knobs))


def changes(cfg: Config) -> str:
    """Every knob ``cfg`` sets away from the model's defaults (for logs)."""
    return ", ".join(differences(cfg, {})) or "defaults"


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


def swarm_sections(doc: Path) -> list[str]:
    """Names of bench/swarm.py's sections in docs/benchmarks.md (``swarm``, ``swarm-40mbit``...)."""
    if not doc.exists():
        return []
    return re.findall(r"<!-- bench:(swarm[\w-]*) -->", doc.read_text())


def swarm_section(doc: Path, name: str = "swarm") -> str | None:
    """The text of one of bench/swarm.py's sections, if there is one."""
    if not doc.exists():
        return None
    pattern = rf"<!-- bench:{re.escape(name)} -->(.*?)<!-- /bench:{re.escape(name)} -->"
    m = re.search(pattern, doc.read_text(), re.S)
    return m.group(1) if m else None


def swarm_setup(doc: Path, name: str = "swarm") -> tuple[int, float, float] | None:
    """(N, F in MiB, U in Mbit/s) that bench/swarm.py measured, read from its section."""
    text = swarm_section(doc, name)
    if text is None:
        return None
    n = re.search(r"N = (\d+) nodes", text)
    f = re.search(r"F = (\d+(?:\.\d+)?) MiB", text)
    u = re.search(r"U = (\d+(?:\.\d+)?) Mbit/s", text)
    if not (n and f and u):
        return None
    return int(n.group(1)), float(f.group(1)), float(u.group(1))


def swarm_rows(doc: Path, name: str = "swarm") -> dict[str, dict[str, str]]:
    """The first table of a swarm section with a p50 column: mode -> {column: cell}."""
    text = swarm_section(doc, name)
    if text is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if header is not None and out:
                break
            continue
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if any(c.lower().startswith("p50") for c in cells):
                header = [c.lower() for c in cells]
            continue
        key = next((k for k in ("plain", "flash", "rolling") if k in cells[0].lower()), None)
        if key is not None and key not in out:
            out[key] = dict(zip(header, cells, strict=False))
    return out


def swarm_p50(doc: Path, name: str = "swarm") -> dict[str, float]:
    """p50 (s) per mode (plain, flash, rolling) of a bench/swarm.py section."""
    out: dict[str, float] = {}
    for key, cells in swarm_rows(doc, name).items():
        cell = next((v for k, v in cells.items() if k.startswith("p50") and "/" not in k), "")
        value = re.match(r"^([0-9]+(?:\.[0-9]+)?)", cell)
        if value:
            out[key] = float(value.group(1))
    return out


def swarm_code(doc: Path, name: str = "swarm") -> str | None:
    """The commit a bench/swarm.py section measured ("Code measured: <sha>")."""
    text = swarm_section(doc, name)
    m = re.search(r"Code measured: ([0-9a-f]{7,40})", text or "")
    return m.group(1) if m else None


def swarm_pressure(cells: dict[str, str]) -> float | None:
    """The measured CPU pressure of a swarm row, as a fraction (None if not recorded)."""
    cell = next((v for k, v in cells.items() if "pressure" in k), "")
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)%", cell)
    return float(m.group(1)) / 100 if m else None


#: A real run whose CPU pressure was at least this was limited by the CPU, not the network.
CPU_BOUND: float = 0.9


def agreement(sim: float, real: float | None, pressure: float | None) -> str:
    """The ±15% criterion on p50 for one validation row."""
    if real is None:
        return "– (not measured)"
    err = sim / real - 1
    if abs(err) <= 0.15:
        return f"{err:+.0%}: **within** ±15%"
    why = ""
    if pressure is not None and pressure >= CPU_BOUND and sim < real:
        why = f" (the real run waited for a CPU: pressure {pressure:.0%})"
    return f"{err:+.0%}: **outside** ±15%{why}"


def validation_table(
    results: Sequence[tuple[str, Result]],
    rows: dict[str, dict[str, str]],
    measured: dict[str, float],
) -> str:
    lines = [
        "| run | simulated p50 | simulated max | simulated egress / F | measured p50 "
        "| measured egress / F | measured CPU pressure | sim vs real p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in results:
        key = next(k for k in ("plain", "flash", "rolling") if k in label)
        real = measured.get(key)
        cells = rows.get(key, {})
        egress = next((v for k, v in cells.items() if "egress" in k), "–")
        cpu = next((v for k, v in cells.items() if "pressure" in k), "–")
        lines.append(
            f"| {label} | {r.pct(50):.1f} s | {r.times.max():.1f} s "
            f"| {r.origin_bytes / r.cfg.size:.2f} | {f'{real:.1f} s' if real else '–'} | {egress} "
            f"| {cpu} | {agreement(r.pct(50), real, swarm_pressure(cells))} |"
        )
    return "\n".join(lines)


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


def _get(results: dict[str, tuple[str, Result]], key: str) -> Result | None:
    return results[key][1] if key in results else None


def _changes_text(ref: Result | None) -> str:
    k = ref.cfg if ref is not None else None
    cap = k.lease_cap if k is not None and k.lease_cap else 16
    links = k.max_links if k is not None and k.max_links else 10
    links_in = k.max_links_in if k is not None and k.max_links_in else 2 * links
    return (
        "1. **A cap on origin fetches per blob, at the tracker** (`Policy.max_origin_fetches`, "
        f"K = {cap}; row *no origin-fetch cap*): at most K leases of a blob count as fetches in "
        "flight; a lease is renewed every `LEASE_TTL`/2 while its fetch runs, recording the "
        "piece's hash ends the fetch (the lease then only guards the piece until it expires) "
        "and a failed fetch releases it. A lease refused for the cap (`capped`) pauses the "
        "origin for every piece for `ORIGIN_RETRY` (`PieceScheduler.pause_origin`). Pieces "
        "leave the origin a few at a time, each at a useful rate, and are re-shared while the "
        "origin works; a slow fetch no longer loses its lease half-way.\n"
        f"2. **A cap on the links of a blob** (row *links uncapped*): a node dials while it has "
        f"fewer than {links} links for the blob and accepts up to {links_in}; a node holding the "
        "whole blob accepts everyone. (Accepting no more than it dials starves late arrivals: "
        "rows *rolling* at 200 nodes below.)\n"
        "3. **One request per peer** (`fetch.PER_PEER` = 1, the scheduler's default is 4; row "
        "*per_peer 4*): a shoal link is a FIFO, so a second request to a busy peer only "
        "queues behind the first while other holders idle.\n"
        "4. **The first lookup after our own announce** (row *first lookup before our "
        "announce*): in a flash crowd a lookup made before anyone has announced finds nobody, "
        "and the next one came a whole `LOOKUP_INTERVAL` later.\n"
        "5. **Pieces of size/500 rounded down** to a power of two, not up (row *pieces "
        "rounded up*; 1 GiB → 512 pieces of 2 MiB instead of 256 of 4 MiB): a piece is "
        "re-shared only once whole, so its size is the delay per hop.\n"
        "\nTwo later changes are modelled in every *shipped* row but make no difference in a "
        "flash crowd: **origin runs** (`Config.origin_runs`; a node alone on a blob leases "
        "up to 64 MiB of pieces at once and fetches them in one request; a crowd contends "
        "the blob before anyone gets a run, and a run's later pieces are cut as soon as "
        "another node wants them), which is for a lone node's cold pull (section "
        "*Single node*), and the tracker's **refusal of a lease of a piece a complete node "
        "holds**, which is for rolling arrivals (below; the tracker's own code, so every "
        "row run since has it).\n"
    )


def body(
    results: dict[str, tuple[str, Result]],
    validation: dict[str, list[tuple[str, Result]]],
    costs: Sequence[tuple[int, float, float]],
    doc: Path,
    left_out: Sequence[str] = (),
) -> str:
    """The section text; every figure in it comes from ``results``."""
    out: list[str] = []
    add = out.append
    before = _get(results, "before")
    shipped = _get(results, "shipped")
    ref = shipped or before
    assert ref is not None, "the suite needs the shipped or the before flash crowd"
    before_label, shipped_label = VERSIONS["before"][0], VERSIONS["shipped"][0]
    add(
        "`bench/simulate.py` runs N shoal nodes on virtual time: every downloading node runs "
        "the real piece scheduler (`peer.mesh.scheduler.PieceScheduler`) and one real tracker "
        "(`tracker.registry.Registry`) answers their announces, lookups and origin leases; "
        "the network between them is a fluid model (what is modelled and what is not: at the "
        f"end). Two versions of the code: **{before_label}**, and **{shipped_label}**, which "
        "adds the changes this simulator led to (listed below; a first cut of it, *"
        f"{VERSIONS['first'][0]}*, is described next). The issue's goals are judged "
        f"on {shipped_label}. Each row is one simulator run of its scenario (`--suite --only KEY` "
        "runs one and caches its result in `/tmp/shoal-sim`; the command above wrote this "
        "section from those results).\n"
    )
    first = VERSIONS["first"][0]
    add(
        f"Rows labelled *{first}* ran before three details of the shipped code were modelled: "
        "at least 4 requests in flight while fewer than 4 peers can be asked "
        "(`fetch.MIN_INFLIGHT`), an origin pause after a capped lease refusal that doubles "
        "up to 4 s with jitter (`fetch.ORIGIN_RETRY_MAX`; fixed 0.25 s there), and a capped "
        "refusal that names the asker counted as a refusal. Rows labelled *"
        f"{shipped_label}* include them; the effect of each at 200 nodes is in the tables "
        "below.\n"
    )
    missing = _unmodelled_shipped()
    if missing:
        add(f"Not in the simulated *{shipped_label}* set: {missing}.\n")
    for r in (shipped, before):
        if r is not None:
            label = version_label(r.cfg)
            add(f"**Goals at {r.cfg.nodes:,} nodes, flash crowd — {label}**: {verdict(r)}.\n")
    add(
        f"**Scenario**: {describe(ref.cfg)}, flash crowd unless noted. The three terms of the "
        f"bound max{{F/u_s, F/d_min, N·F/(u_s+Σu_i)}} are all ≈ {ref.bound:.2f} s: the tightest "
        "case, an origin no faster than a node (Kraken's 2,600-host benchmark is the same "
        "case with 5 origins). *code* is the version simulated, or what a what-if changes in "
        f"it. The simulator is single-threaded; *simulator wall* is its run time on this "
        "machine (2 cores shared with other work, so an upper bound).\n"
    )
    add(
        table(
            results,
            [
                "before",
                "shipped",
                "slow",
                "slow-fix",
                "rolling",
                "rolling-fix",
                "leave",
                "fast-origin",
            ],
        )
    )
    add(
        "\nBounds: with slow nodes the bound is their F/d_min, so p50 sits far below it (the "
        "split below); rolling arrivals are timed per node from its own start against the "
        "flash-crowd bound; nodes that leave are not counted. *origin re-fetches*: origin "
        "fetches of a piece the origin had already sent. *first P2P piece*: when the first "
        "piece went from one node to another.\n"
    )
    for key in ("slow", "slow-fix"):
        if key in results:
            add(f"- {results[key][0]}: {slow_split(results[key][1])}")
    add("")
    add(_slow_text(results))
    add(
        f"![completion CDF and origin egress, {before_label} vs {shipped_label}](img/sim-flash.png)\n"
    )
    add(f"![{shipped_label}: the other scenarios](img/sim-scenarios.png)\n")
    add(f"### What changed between {before_label} and {shipped_label}\n")
    old = before or _get(results, "s-before")
    if old is not None:
        c = old.counters
        calls, secs = old.costs["next_requests"]
        add(
            f"{before_label.capitalize()}, at {old.cfg.nodes:,} nodes: {c['origin_peak']:.0f} origin "
            "requests were in flight at once (each node keeps "
            f"{old.cfg.scheduler.get('origin_slots', 2)} and a lease only stops two nodes "
            "taking the same piece), so the origin's uplink was split that many ways and "
            f"the first piece went from one node to another only at {c['first_p2p_at']:.1f} s; "
            f"{c['origin_duplicate']:.0f} pieces were fetched from the origin again after "
            f"their lease expired; links were not capped ({2 * c['links'] / old.cfg.nodes:.0f} "
            f"per node, at most {c['links_max']:.0f}), and with them each `next_requests` call "
            f"cost {1e6 * secs / max(calls, 1):,.0f} µs on average."
            + (
                f" The run was stopped after {old.wall / 60:.0f} minutes (wall) at "
                f"{old.sim_time:.1f} s simulated ({old.sim_time / old.bound:.1f}× the bound), "
                f"with {old.times.size} of {old.cfg.nodes:,} nodes done"
                + (
                    f"; at {small_before.cfg.nodes} nodes the same code finished at p50 "
                    f"{small_before.pct(50) / small_before.bound:.2f}× the bound (table below)"
                    if (small_before := _get(results, "s-before")) is not None
                    and small_before.times.size
                    else ""
                )
                + "."
                if old.unfinished
                else ""
            )
            + "\n"
        )
    add(_changes_text(shipped))
    small = _get(results, "s-base")
    add(
        f"Each row below runs {small.cfg.nodes if small else 200} nodes at the same rates and "
        "undoes one change (the bound does not depend on N here):\n"
    )
    ablation = ["s-base", "s-before", "a-lease", "a-links", "a-pp4", "a-lookup", "a-piece"]
    add(table(results, ablation))
    undone = sorted(
        (
            (results[k][1].pct(50) / results[k][1].bound, results[k][0])
            for k in ablation[2:]
            if k in results
        ),
        reverse=True,
    )
    if small is not None and undone:
        add(
            f"\nAgainst {small.pct(50) / small.bound:.2f}× with every change, p50 with one undone: "
            + "; ".join(f"{label.split(', ', 1)[-1]} {x:.2f}×" for x, label in undone)
            + ".\n"
        )
    add(_capself_text(results))
    add(_rolling_text(results))
    add("### Validation against the real shaped swarm (bench/swarm.py)\n")
    add(
        "The simulator runs the configuration of each `bench/swarm.py` section of this file "
        "(its N, F and U; downlinks unlimited; tbf's payload rate; origin time to first byte "
        "2 ms) with the code version that section measured, and compares medians. The "
        "criterion: simulated p50 within ±15% of the measured p50. The simulator models the "
        "network only; where the real nodes waited for a CPU (the CPU-pressure column), the "
        "real swarm is slower than any network model can say, and such a row cannot "
        "validate the model either way.\n"
    )
    for name, runs in validation.items():
        rows = swarm_rows(doc, name)
        measured = swarm_p50(doc, name)
        if not runs:
            continue
        flash_cfg = next((r.cfg for label, r in runs if "flash" in label), runs[0][1].cfg)
        code = swarm_code(doc, name)
        add(
            f"**`{name}`** (measured code {code or 'not recorded'}; simulated as "
            f"*{version_label(flash_cfg)}*) — {describe(flash_cfg)}:\n"
        )
        add(validation_table(runs, rows, measured))
        add("")
    add(_validation_summary(validation, doc))
    add("### Against Kraken's published simulations\n")
    krows = [(before_label, before), (shipped_label, shipped)]
    if "kraken" in results:
        krows.append((f"{shipped_label}, 5,000 × 500 MB", results["kraken"][1]))
    add(kraken_table([(label, r) for label, r in krows if r is not None]))
    add(
        "\nKraken's simulator (`tools/bin/simulation`) moves 10 pieces per peer per round up "
        "and down on a fixed graph: its ideal (F/u) is our bound with u_s = u = d. It has no "
        "origin bottleneck and no discovery; ours runs the node's real scheduler, leases and "
        'lookups over a max-min fair network. Kraken\'s "84–85% of link speed" at '
        "1,000 × 10 GB is 1.18–1.19× its ideal; its 5,000 × 500 MB run ends at 1.36×. "
        "Kraken's production benchmark is the same tight case as ours (p50 at the per-host "
        "bound, p99 1.8×), with 5 origins.\n"
    )
    add("### What the real scheduler costs\n")
    ref_calls = ref.costs["next_requests"]
    if before is not None and shipped is not None:
        b_calls, s_calls = before.costs["next_requests"], shipped.costs["next_requests"]
        add(
            "Measured inside the 1,000-node runs (wall time on this shared machine): "
            f"`next_requests` cost {1e6 * b_calls[1] / max(b_calls[0], 1):,.0f} µs per call "
            f"{before_label} (links uncapped) and {1e6 * s_calls[1] / max(s_calls[0], 1):,.0f} "
            f"µs {shipped_label}. "
        )
    elif ref_calls[0]:
        add(
            "Measured inside the 1,000-node run: `next_requests` cost "
            f"{1e6 * ref_calls[1] / ref_calls[0]:,.0f} µs per call. "
        )
    add(
        "A call is O(peers) to find the free ones, plus O(min(pieces held, pending)) per "
        "free peer (`RarityIndex.rarest`), plus O(late requests × free peers) on the hedge "
        "path. Alone (`bench/sim/costs.py`, CPU time; peers each hold a quarter of 1,024 "
        "pieces, every slot filled):\n"
    )
    add("| linked peers | µs per call with nothing to assign | µs per call, every request late |")
    add("| --- | --- | --- |")
    for n, idle, late in costs:
        add(f"| {n} | {idle:,.0f} | {late:,.0f} |")
    ref_label = shipped_label if ref is shipped else before_label
    add(f"\nEvery real-code call in the 1,000-node {ref_label} run:\n")
    add(costs_table(ref))
    add("\n### What is modelled and what is not\n")
    add(
        "**Real code**, called as the node calls it: `PieceScheduler` (one per downloading "
        "node, configured as `BlobFetch` configures it: `on_bitfield`, `on_have`, "
        "`on_piece_ok`, `on_busy`, `on_timeout`, `on_peer_gone`, `pause_origin`, "
        "`next_requests(now)`), `PiecePlan`/`Bitfield`, and the tracker's `Registry` "
        "(announce, leave, lookup ranked by `tracker.model.rank`, origin leases with the "
        "per-blob cap, piece-hash records). Constants are read from the code: "
        f"{shipped_constants()}.\n\n"
        "**Modelled** after `peer/mesh/fetch.py` and `swarm.py`: announces (50 ms after a "
        "download starts, when it ends, and periodically), lookups (one at start for "
        "addresses, one that links 0.1 s later, after our announce, then every second), links (`Interested` + `Bitfield` both ways, a `Have` "
        "to every linked peer per verified piece), origin pieces under a lease (renewed while "
        "fetching with the cap), a peer's piece taken only once its hash is known, the 10 s "
        "request timeout, and departing nodes dropping their links and transfers (the model "
        "looks holders up every second even when a download has all the links it dials; the "
        "shipped swarm skips those lookups).\n\n"
        "**Network** (`bench/sim/network.py`): fluid. Each link direction is a FIFO channel, "
        "each origin range request a channel of its own; rates are the max-min fair share of "
        "node uplinks, node downlinks and the origin's uplink, recomputed when the set of "
        f"active channels changes (within 1%). Time moves in steps of {ref.cfg.step() * 1e3:.1f} ms "
        "(a tenth of a piece at full rate) with exact finishing times inside a step; a "
        "tracker round trip costs one step; a node re-plans at most every "
        f"{ref.cfg.replan * 1e3:.0f} ms when something happened to it and every 0.1 s anyway. "
        "The sensitivity rows below move each of these.\n\n"
        "**Not modelled**: CPU (every call of the real code takes zero virtual time — its "
        "cost is measured above, and the validation rows with high CPU pressure show what "
        "it does to a real swarm: hashing, TLS/HTTP, Python and trio overheads); disk (writes "
        "and reads are free: no page cache pressure, no fsync); TCP dynamics (no slow start, "
        "congestion control, loss, retransmission or RTT: a flow gets its max-min share at "
        "once, so a new piece transfer is never slower to start than an old one); headers "
        "and framing (rates are payload); the tracker's own CPU and HTTP latency (a round "
        "trip is one step); a node crashing without leaving (departures are clean).\n"
    )
    add("### Sensitivity of the model\n")
    add(
        "The 200-node shipped flash crowd with each approximation moved (a finer time step, a "
        "re-plan at every step, exact max-min fairness, another seed). The tracker keeps "
        "peers in sets of their ids, so a run also depends on Python's string-hash seed "
        "(which holder a lookup returns first among equals); the simulator now pins it "
        "(`PYTHONHASHSEED=0`), but most rows here ran before it did, each with its own seed, so "
        "their spread measures that too:\n"
    )
    add(table(results, ["s-base", "s-dt", "s-replan", "s-exact", "s-seed", "s-mininf"]))
    if left_out:
        add("\n### Left out\n")
        add(
            "Not run for this section (no cached result when it was written; each needs a "
            "single-threaded simulator run on a 2-core machine shared with other work): "
            + "; ".join(left_out)
            + ".\n"
        )
    return "\n".join(out)


def _unmodelled_shipped() -> str:
    """Shipped node settings the simulator's ``shipped`` version does not include yet."""
    out = []
    shipped = VERSIONS["shipped"][1].get("scheduler", {})
    min_inflight = getattr(fetch, "MIN_INFLIGHT", 0)
    if min_inflight and "min_inflight" not in shipped:
        out.append(
            f"`fetch.MIN_INFLIGHT` = {min_inflight} (`SchedulerConfig.min_inflight`: with fewer "
            "askable peers than that, each gets more than one request; added to the code after "
            "these runs, it only acts when a node can ask fewer than "
            f"{min_inflight} peers; the last row of the sensitivity table has it)"
        )
    return "; ".join(out)


def _slow_text(results: dict[str, tuple[str, Result]]) -> str:
    """Slow nodes and the origin cap: what the slow-fix what-if changes."""
    slow, fix = _get(results, "slow"), _get(results, "slow-fix")
    if slow is None:
        return ""
    share = round(slow.cfg.nodes * slow.cfg.slow_fraction)
    fast = slow.times[slow.ids >= share] if slow.ids.size == slow.times.size else slow.times
    own = slow.cfg.size / slow.cfg.down
    text = (
        f"With {slow.cfg.slow_fraction:.0%} slow nodes the fast ones finish at p50 "
        f"{float(np.median(fast)) / own:.2f}× their own F/d: with the cap, an origin fetch is a "
        "scarce slot and a slow node holds one ten times longer (the scheduler sets no hedge "
        "deadline on origin requests); the origin took "
        f"{slow.counters['origin_done_at']:.1f} s to send one copy"
    )
    flash = _get(results, "shipped")
    if flash is not None:
        text += f" ({flash.counters['origin_done_at']:.1f} s without slow nodes)"
    text += (
        ", and the pieces slow nodes fetched leave them at a tenth of the rate a fast node "
        "would send them."
    )
    if fix is not None and fix.ids.size == fix.times.size:
        fast_fix = fix.times[fix.ids >= share]
        text += (
            f" If nodes whose downlink is below {fix.cfg.origin_min_down / MBIT:,.0f} Mbit/s "  # type: ignore[operator]
            "never fetch from the origin (`SchedulerConfig(origin=False)`, a `BlobFetch` "
            "change; row *slow-fix*), the fast nodes finish at p50 "
            f"{float(np.median(fast_fix)) / own:.2f}×."
        )
    return text + "\n"


def _capself_text(results: dict[str, tuple[str, Result]]) -> str:
    """A flaw the first runs found in ``Swarm.lease`` (fixed before the code shipped)."""
    base, fixed = _get(results, "s-base"), _get(results, "s-capself")
    if fixed is None or base is None:
        return ""
    cap = base.cfg.lease_cap
    return (
        "\nA flaw the first runs found (fixed in the shipped code, 6aa2a2f): `Swarm.lease` "
        "treated every refusal that names the asker as a grant (`reply.holder == "
        "self.peer_id`), and a capped refusal names the holder of the blob's lease that "
        "expires first, which can be the asker itself; the node then fetched the piece with "
        f"no lease, past the cap. At {base.cfg.nodes} nodes origin requests in flight peaked "
        f"at {base.counters['origin_peak']:.0f} under a cap of {cap} without the fix and "
        f"{fixed.counters['origin_peak']:.0f} with it (egress "
        f"{base.origin_bytes / base.cfg.size:.2f} F → {fixed.origin_bytes / fixed.cfg.size:.2f} F). "
        "The fix is one condition: `reply.holder == self.peer_id and not reply.capped`.\n\n"
        + table(results, ["s-base", "s-capself"])
        + "\n"
    )


def _rolling_text(results: dict[str, tuple[str, Result]]) -> str:
    """Rolling arrivals: what the shipped code does, and the what-ifs that fix it."""
    out: list[str] = []
    roll = _get(results, "rolling")
    if roll is not None and roll.origin_bytes / roll.cfg.size <= 1.2:
        c = roll.counters
        out.append(
            f"\n### Rolling arrivals\n\nAt {roll.cfg.nodes:,} nodes arriving over "
            f"{roll.cfg.spread:g} s, {VERSIONS['shipped'][0]} finishes fast (p50 "
            f"{roll.pct(50) / roll.bound:.2f}×, p99 {roll.pct(99) / roll.bound:.2f}× the bound) "
            f"and the origin sends {roll.origin_bytes / roll.cfg.size:.2f} F "
            f"({c['origin_duplicate']:,.0f} of its {c['origin_fetches']:,.0f} fetches of a "
            "piece it had already sent). Before the tracker refused leases of pieces a complete "
            "node holds, it sent 3.76 F here: a node asks the origin for a piece when none of "
            "the peers it is linked to holds it (the scheduler cannot tell that from nobody "
            "holding it: a node that has just started has no links yet, and one linked to "
            "other late arrivals misses what they miss), and the tracker granted the lease "
            f"once the piece's first lease had lapsed, `LEASE_TTL` = {roll.cfg.lease_ttl:g} s "
            "after its hash was recorded. Now a new lease of a piece whose hash is recorded is "
            "refused (`capped`, naming a live node that holds the whole blob) unless the asker "
            "insists: it does after 4 such refusals in a row with no peer of its own holding "
            "the piece (a holder it banned, or cannot reach). The rows below are the what-ifs "
            "that led there, run on the code as first simulated:\n"
        )
        out.append(
            "- *no lease for a piece a complete node holds* (`lease_refuse_held`, the what-if "
            "of the tracker change now shipped);\n"
            "- *no request before the first lookup* (`wait_first_lookup`, a `BlobFetch` "
            "change): the fetch asks for nothing, the origin included, until its first "
            "lookup has linked it to holders.\n"
        )
    elif roll is not None:
        c = roll.counters
        out.append(
            f"\n### Rolling arrivals\n\nAt {roll.cfg.nodes:,} nodes arriving over "
            f"{roll.cfg.spread:g} s, {VERSIONS['shipped'][0]} finishes fast (p50 "
            f"{roll.pct(50) / roll.bound:.2f}×, p99 {roll.pct(99) / roll.bound:.2f}× the bound) "
            f"but the origin sends {roll.origin_bytes / roll.cfg.size:.2f} F: "
            f"{c['origin_duplicate']:,.0f} of its {c['origin_fetches']:,.0f} fetches were of a "
            "piece it had already sent. A node asks the origin for a piece when none of the "
            "peers it is linked to holds it (the scheduler cannot tell that from nobody "
            "holding it: a node that has just started has no links yet, and one linked to "
            "other late arrivals misses what they miss), and the tracker grants the lease "
            f"once the piece's first lease has lapsed, `LEASE_TTL` = {roll.cfg.lease_ttl:g} s "
            "after its hash was recorded. Arrivals spread over more than `LEASE_TTL` make "
            "that the common case. Two what-ifs:\n"
        )
        out.append(
            "- *no lease for a piece a complete node holds* (`lease_refuse_held`, a tracker "
            "change): while a live node holds the whole blob, a lease for a piece whose "
            "hash is recorded is refused like a capped one (pause the origin briefly) and "
            "names that node, so the asker links to it;\n"
            "- *no request before the first lookup* (`wait_first_lookup`, a `BlobFetch` "
            "change): the fetch asks for nothing, the origin included, until its first "
            "lookup has linked it to holders.\n"
        )
    rows = ["r-base", "r-fix", "r-wait", "r-in10"]
    small = next((results[k][1] for k in rows if k in results), None)
    if small is not None:
        out.append(
            f"{small.cfg.nodes} nodes arriving over {small.cfg.spread:g} s (the arrival rate of "
            "the 1,000-node row; all arrive before the first leases lapse):\n"
        )
        out.append(table(results, rows))
    in10 = _get(results, "r-in10")
    if in10 is not None:
        out.append(
            "\nThe last row is the link cap as first simulated, where a node accepted no "
            "more links than it dials: the nodes that arrived first fill each other's slots "
            "and later arrivals link only among themselves, so the pieces they need sit on "
            "nodes they cannot reach; they wait for leases to lapse and fetch those pieces "
            f"from the origin again ({in10.counters['lease_refused']:,.0f} refused leases "
            "in that run). A run of that code at 1,000 nodes arriving over 60 s had no node "
            "done after 120 s simulated. Accepting twice as many links as a node dials, and "
            "complete nodes accepting everyone, is what fixed it.\n"
        )
    return "\n".join(out)


def _validation_summary(validation: dict[str, list[tuple[str, Result]]], doc: Path) -> str:
    """One sentence per section: which rows meet ±15% and why the others do not."""
    lines = []
    for name, runs in validation.items():
        measured = swarm_p50(doc, name)
        rows = swarm_rows(doc, name)
        within, outside, cpu = [], [], []
        for label, r in runs:
            key = next(k for k in ("plain", "flash", "rolling") if k in label)
            real = measured.get(key)
            if real is None:
                continue
            ok = abs(r.pct(50) / real - 1) <= 0.15
            (within if ok else outside).append(key)
            pressure = swarm_pressure(rows.get(key, {}))
            if not ok and pressure is not None and pressure >= CPU_BOUND:
                cpu.append(f"{key} ({pressure:.0%})")
        if not within and not outside:
            continue
        text = f"- `{name}`: within ±15%: {', '.join(within) or 'none'}"
        if outside:
            text += f"; outside: {', '.join(outside)}"
            if cpu:
                text += (
                    f". The real runs outside were CPU-bound ({', '.join(cpu)} CPU pressure): "
                    "the nodes waited for a CPU, which the simulator does not model, so these "
                    "rows say nothing about the network model"
                )
        lines.append(text + ".")
    return "\n".join(lines) + "\n"
