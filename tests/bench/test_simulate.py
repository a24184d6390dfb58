"""The swarm simulator's network model and its end-to-end sanity (bench/sim)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from bench.sim import report  # noqa: E402
from bench.sim.model import BEFORE, SHIPPED, Config, Simulation, lower_bound  # noqa: E402
from bench.sim.network import Network, maxmin  # noqa: E402

MIB = 1 << 20


def water_fill(flows: list[tuple[int, int]], up: list[float], down: list[float]) -> list[float]:
    """Textbook progressive filling: raise every unfrozen flow together until a resource fills."""
    rate = [0.0] * len(flows)
    frozen = [False] * len(flows)
    cap = {("u", i): c for i, c in enumerate(up)} | {("d", i): c for i, c in enumerate(down)}
    while not all(frozen):
        users: dict[tuple[str, int], list[int]] = {}
        for f, (s, d) in enumerate(flows):
            if not frozen[f]:
                users.setdefault(("u", s), []).append(f)
                users.setdefault(("d", d), []).append(f)
        step = min(cap[r] / len(fs) for r, fs in users.items())
        for r, fs in users.items():
            cap[r] -= step * len(fs)
        for f in range(len(flows)):
            if not frozen[f]:
                rate[f] += step
        for r, fs in users.items():
            if cap[r] <= 1e-9 * max(1.0, step):
                for f in fs:
                    frozen[f] = True
    return rate


@pytest.mark.parametrize("seed", range(6))
def test_maxmin_is_the_progressive_filling_allocation(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 9)
    up = [rng.choice([1.0, 2.0, 5.0, 10.0]) for _ in range(n)]
    down = [rng.choice([1.0, 3.0, 8.0, math.inf]) for _ in range(n)]
    flows = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(1, 25))]
    flows = [(s, d) for s, d in flows if s != d] or [(0, 1)]
    rates, _ = maxmin(
        np.array([s for s, _ in flows]),
        np.array([d for _, d in flows]),
        np.array(up),
        np.array(down),
    )
    exact = water_fill(flows, up, down)
    assert rates == pytest.approx(exact, rel=1e-6)
    loose, _ = maxmin(
        np.array([s for s, _ in flows]), np.array([d for _, d in flows]), np.array(up),
        np.array(down), tol=0.05,
    )  # fmt: skip
    assert loose == pytest.approx(exact, rel=0.051)
    for end in range(n):  # never above a capacity
        assert sum(r for r, (s, _) in zip(loose, flows, strict=True) if s == end) <= up[end] * (
            1 + 1e-9
        )
        assert sum(r for r, (_, d) in zip(loose, flows, strict=True) if d == end) <= down[end] * (
            1 + 1e-9
        )


def test_fifo_channel_and_fair_share() -> None:
    net = Network([10.0, 100.0, 100.0], [100.0, 100.0, 100.0])
    a, b = net.open(0, 1), net.open(0, 2)
    net.push(a, "a1", 10)
    net.push(a, "a2", 10)
    net.push(b, "b1", 20)
    done = net.advance(0.0, 10.0)
    # the source's 10 B/s is split 5/5: a1 ends at 2 s, a2 at 4 s, b1 at 4 s
    assert [(round(t, 6), item) for t, _, item in done] == [(2.0, "a1"), (4.0, "a2"), (4.0, "b1")]
    assert net.sent[0] == pytest.approx(40.0)


def test_cancel_reports_the_bytes_already_sent() -> None:
    net = Network([10.0, 100.0], [100.0, 100.0])
    ch = net.open(0, 1)
    net.push(ch, "x", 100)
    net.push(ch, "y", 100)
    assert net.advance(0.0, 3.0) == []
    assert net.cancel(ch, "y") == 0.0
    assert net.cancel(ch, "x") == pytest.approx(30.0)
    assert net.active == 0


@pytest.mark.parametrize(("origin", "down"), [(20e6, 50e6), (50e6, 20e6)])
def test_one_node_from_the_origin_takes_f_over_the_narrower_link(
    origin: float, down: float
) -> None:
    cfg = Config(nodes=1, size=32 * MIB, up=down, down=down, origin_up=origin, origin_rtt=0.0)
    result = Simulation(cfg).run()
    assert result.times[0] == pytest.approx(cfg.size / min(origin, down), rel=0.03)
    assert result.origin_bytes == pytest.approx(cfg.size)


def test_plain_server_time_without_p2p() -> None:
    # 10 nodes, no P2P: max(N·F/u_s, F/d) — here the origin (5 × d) is the bottleneck
    cfg = Config(
        nodes=10, size=16 * MIB, up=10e6, down=10e6, origin_up=50e6, mode="server", origin_rtt=0.0
    )
    result = Simulation(cfg).run()
    expected = max(cfg.nodes * cfg.size / cfg.origin_up, cfg.size / cfg.down)
    assert np.median(result.times) == pytest.approx(expected, rel=0.03)
    assert result.origin_bytes == pytest.approx(cfg.nodes * cfg.size)


def test_plain_server_with_a_fast_origin_is_limited_by_the_downlink() -> None:
    cfg = Config(
        nodes=10, size=16 * MIB, up=10e6, down=10e6, origin_up=1e9, mode="server", origin_rtt=0.0
    )
    result = Simulation(cfg).run()
    assert result.times.max() == pytest.approx(cfg.size / cfg.down, rel=0.03)


def test_a_small_mesh_respects_the_lower_bound_and_fetches_each_piece_once() -> None:
    cfg = Config(nodes=12, size=24 * MIB, up=20e6, down=40e6, origin_up=20e6, origin_rtt=0.001)
    result = Simulation(cfg).run()
    assert result.times.size == cfg.nodes
    bound = lower_bound(cfg)
    assert result.times.min() >= cfg.size / cfg.down * 0.99
    assert result.times.max() >= bound * 0.99
    plain_server = cfg.nodes * cfg.size / cfg.origin_up  # 12× the bound
    assert result.times.max() <= plain_server / 2  # P2P does the work
    assert result.origin_bytes == pytest.approx(cfg.size, rel=0.05)
    assert result.counters["pieces_from_peers"] > result.counters["pieces_from_origin"]


def test_reads_the_real_swarm_figures_to_compare_with(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "<!-- bench:swarm -->\n## Flash crowd\n\nN = 8 nodes + tracker; uplinks U = 160 Mbit/s; "
        "F = 256 MiB.\n\n| experiment | p50 s | max s |\n| --- | ---: | ---: |\n"
        "| **shoal, flash crowd** | 15.2 | 17.0 |\n| plain server (no P2P) | 108.5 | 109.0 |\n"
        "| shoal, rolling | 6.1 | 14.0 |\n<!-- /bench:swarm -->\n"
    )
    assert report.swarm_setup(doc) == (8, 256.0, 160.0)
    assert report.swarm_p50(doc) == {"flash": 15.2, "plain": 108.5, "rolling": 6.1}
    assert report.swarm_p50(tmp_path / "missing.md") == {}


def test_rolling_arrivals_with_the_shipped_changes_finish_and_fetch_each_piece_about_once() -> None:
    # late arrivals must find holders past the link caps (the cause of a rolling run at
    # 1,000 nodes in which no node finished) and must not re-fetch what the swarm has
    cfg = Config(
        nodes=30, size=32 * MIB, up=40e6, down=40e6, origin_up=40e6, origin_rtt=0.002,
        arrival="rolling", spread=4.0, max_time=60.0, **SHIPPED,
    )  # fmt: skip
    result = Simulation(cfg).run()
    assert result.times.size == cfg.nodes
    assert result.origin_bytes <= 1.2 * cfg.size
    assert result.times.max() <= 3.0 * lower_bound(cfg)  # 18x with the inbound cap at 10


def test_the_before_version_is_pinned_whatever_the_code_ships_now() -> None:
    # 1 GiB: version 1 pieces (size / 500 rounded up) and per_peer 4, as of 054b7a7
    before = Config(size=1 << 30, **BEFORE)
    assert before.piece_plan().piece_size == 4 * MIB
    assert Config(size=1 << 30, **SHIPPED).piece_plan().piece_size == 2 * MIB
    assert report.version_label(before).startswith("before")
    assert report.version_label(Config(**SHIPPED)) == "shipped"
    assert report.version_label(Config(**{**SHIPPED, "lease_cap": None})).endswith("lease_cap=None")


@pytest.mark.parametrize("fix", ["lease_refuse_held", "wait_first_lookup"])
def test_late_arrivals_do_not_refetch_pieces_whose_lease_lapsed(fix: str) -> None:
    # arrivals over 40 s > LEASE_TTL: without either change a node that starts late asks
    # the origin for pieces before it is linked to anyone and gets the lapsed lease (the
    # shipped set: 1.66 F here, 3.8 F at 1,000 nodes over 60 s)
    cfg = Config(
        nodes=30, size=32 * MIB, up=40e6, down=40e6, origin_up=40e6, origin_rtt=0.002,
        arrival="rolling", spread=40.0, max_time=90.0, **{**SHIPPED, fix: True},
    )  # fmt: skip
    result = Simulation(cfg).run()
    assert result.times.size == cfg.nodes
    assert result.counters["origin_duplicate"] == 0
    assert result.origin_bytes == pytest.approx(cfg.size, rel=0.02)


def test_origin_fetches_in_flight_stay_under_the_tracker_cap() -> None:
    # the tracker's cap holds once a capped refusal naming the asker is taken as a refusal
    # (shipped Swarm.lease takes it for a grant and fetches past the cap)
    cfg = Config(
        nodes=30, size=32 * MIB, up=40e6, down=40e6, origin_up=40e6, origin_rtt=0.002,
        **{**SHIPPED, "lease_cap": 4, "capped_self_refused": True},
    )  # fmt: skip
    result = Simulation(cfg).run()
    assert result.times.size == cfg.nodes
    assert result.counters["origin_peak"] <= 4
    assert result.counters["origin_duplicate"] == 0
