"""The simulator report's findings in prose: the changes the simulator led to, and what
the slow-node, capped-self and rolling-arrival runs showed; each paragraph reads its
figures from the suite's results (or is left out when they were not run).
"""

from __future__ import annotations

import numpy as np

from bench.sim.labels import MBIT
from bench.sim.model import VERSIONS, Result
from bench.sim.tables import result_of, table
from peer.mesh import fetch


def changes_text(ref: Result | None) -> str:
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


def unmodelled_shipped() -> str:
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


def slow_text(results: dict[str, tuple[str, Result]]) -> str:
    """Slow nodes and the origin cap: what the slow-fix what-if changes."""
    slow, fix = result_of(results, "slow"), result_of(results, "slow-fix")
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
    flash = result_of(results, "shipped")
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


def capself_text(results: dict[str, tuple[str, Result]]) -> str:
    """A flaw the first runs found in ``Swarm.lease`` (fixed before the code shipped)."""
    base, fixed = result_of(results, "s-base"), result_of(results, "s-capself")
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


def rolling_text(results: dict[str, tuple[str, Result]]) -> str:
    """Rolling arrivals: what the shipped code does, and the what-ifs that fix it."""
    out: list[str] = []
    roll = result_of(results, "rolling")
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
    in10 = result_of(results, "r-in10")
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
