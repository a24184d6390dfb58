"""The simulator's scenarios and results.

``Config`` (one scenario, with the what-if knobs of the changes it weighs), the knobs of
each code version (``BEFORE``, ``SHIPPED``, ``FIRST_CUT``: ``VERSIONS``), the
``SchedulerConfig`` a fetch builds, the scenario's lower bound and node capacities, and
``Result`` (what one run measured). The model itself: :mod:`bench.sim.model`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peer.mesh import fetch as _fetch
from peer.mesh.fetch import LEASE_TTL
from peer.mesh.pieces import MAX_PIECE_SIZE, MIN_PIECE_SIZE, PiecePlan
from peer.mesh.scheduler import SchedulerConfig


def _mesh_const(name: str, default: float) -> Any:
    """A constant of the node's swarm layer, wherever it lives now (else its 054b7a7 value)."""
    for module in ("peer.mesh.swarm", "peer.mesh.swarm_tracker", "peer.mesh.blobpeers"):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, name):
            return getattr(found, name)
    return default


ANNOUNCE_DEBOUNCE: float = _mesh_const("ANNOUNCE_DEBOUNCE", 0.05)
MIN_ANNOUNCE_GAP: float = _mesh_const("MIN_ANNOUNCE_GAP", 0.25)
MAX_LINKS_PER_BLOB: int = _mesh_const("MAX_LINKS_PER_BLOB", 10)
MAX_REQUESTS: int = _mesh_const("MAX_REQUESTS", 8)

DIGEST = "sha256:" + "ab" * 32
EPOCH = 1_700_000_000.0  # virtual t = 0 in the tracker's Unix seconds
MB = 1e6


@dataclass(frozen=True, kw_only=True)
class Config:
    """One scenario. Rates in bytes/s, times in seconds."""

    nodes: int = 1000
    size: int = 1 << 30
    up: float = 125e6  # node upload
    down: float = 125e6  # node download (inf: unlimited)
    origin_up: float = 125e6
    slow_fraction: float = 0.0  # this share of nodes gets slow_factor x up and down
    slow_factor: float = 0.1
    arrival: str = "flash"  # flash | rolling
    spread: float = 0.0  # rolling: arrivals uniform over [0, spread)
    leave_fraction: float = 0.0  # this share of nodes leaves mid-transfer
    mode: str = "mesh"  # mesh | server (no P2P, no leases: every node from the origin)
    origin_rtt: float = 0.02  # time to first byte of an origin range request
    dt: float | None = None  # step; default: a tenth of a piece at the fastest node rate
    replan: float = 0.0  # a node re-plans at most this often (0: every step it is poked)
    scheduler: dict[str, Any] = field(default_factory=dict)  # SchedulerConfig overrides
    # What-ifs (None/False: as shipped). Each stands for a change to the shipped code:
    max_links: int | None = None  # Swarm: a node dials while it has fewer links for the blob
    max_links_in: int | None = None  # ... and accepts links up to this many (None: max_links)
    seeders_accept_all: bool = False  # ... except a node holding the whole blob: no cap
    lease_ttl: float = LEASE_TTL  # fetch.LEASE_TTL
    lease_renew: bool = False  # BlobFetch: renew the lease every ttl/2 while fetching
    # Tracker: at most K origin fetches of a blob in flight (leases renewed while fetching);
    # a node refused for the cap backs the origin off for every piece for origin_retry.
    lease_cap: int | None = None
    # ... and no lease at all for a piece whose hash a live node recorded: the refusal names
    # that node with its address and the asker links to it, past the link caps
    lease_refuse_recorded: bool = False
    origin_retry: float = 0.25
    # fetch.ORIGIN_RETRY_MAX: a capped refusal pauses origin_retry * 2**k (k: capped refusals
    # in a row), at most this, times U(0.5, 1.5); None: a fixed origin_retry (as first simulated)
    origin_retry_max: float | None = None
    # Swarm.lease: a capped refusal that names ourselves is a refusal (shipped: a grant)
    capped_self_refused: bool = False
    # Tracker: no lease for a piece whose hash is recorded while a live node holds the whole
    # blob; the refusal is ``capped``-like (pause the origin) and names one such holder
    lease_refuse_held: bool = False
    early_lookup: bool = False  # Swarm: first lookup after our own announce, not before
    # BlobFetch: request nothing (the origin included) before the first lookup has linked
    # us to holders (shipped: the first next_requests runs before any lookup answers)
    wait_first_lookup: bool = False
    inflight_cap: int | None = None  # BlobFetch: at most this many requests in flight
    piece_size: int | None = None  # pieces.piece_size_for: this size
    piece_round_down: bool = False  # pieces.piece_size_for: round size/500 down, not up
    origin_min_down: float | None = None  # nodes with a slower downlink never use the origin
    # BlobFetch: a lease asks for a run of the following pending pieces (fetch.RUN_BYTES; the
    # tracker grants more than one only to a node alone in fetching the blob), fetched in one
    # origin request that delivers them in order
    origin_runs: bool = False
    seed: int = 1
    max_time: float = 3600.0
    max_wall: float = math.inf  # stop after this many seconds of real time
    bucket: float = 0.5  # seconds per bin of the origin egress time series
    tol: float = 0.01  # max-min allocation tolerance (bench.sim.network.maxmin)

    def piece_plan(self) -> PiecePlan:
        """The pieces: both rules are spelled out here, whatever ``pieces.py`` ships."""
        if self.piece_size is not None:
            return PiecePlan(self.size, self.piece_size)
        want = max(1, self.size // 500)
        if self.piece_round_down:  # the power of two at or below size/500 (wire protocol 2)
            size = 1 << (want.bit_length() - 1)
        else:  # ... at or above it (wire protocol 1, the rule as of 054b7a7)
            size = 1 << (-(-self.size // 500) - 1).bit_length()
        return PiecePlan(self.size, min(MAX_PIECE_SIZE, max(MIN_PIECE_SIZE, size)))

    def step(self) -> float:
        if self.dt is not None:
            return self.dt
        fastest = max(r for r in (self.up, self.down, self.origin_up) if math.isfinite(r))
        return min(0.02, max(0.001, self.piece_plan().piece_size / fastest / 10))


BEFORE_COMMIT = "054b7a7"

#: The code before the simulator's changes (as of commit 054b7a7), pinned so that its
#: rows do not follow later changes to the real defaults (per_peer, piece size).
BEFORE: dict[str, Any] = {
    "piece_round_down": False,
    "scheduler": {"per_peer": 4, "origin_slots": 2},
}

#: The changes the simulator led to, as shipped (issue 8's goals are judged on these): a
#: cap on the links of a blob (10 dialled, 20 accepted, seeders take everyone), the
#: tracker's cap of origin fetches per blob (leases renewed while fetching, ended by the
#: piece's hash, released on failure), the first lookup after our own announce, pieces of
#: size/500 rounded down, one request per peer (at least 4 in flight while fewer peers can be
#: asked), a capped refusal that names the asker is a refusal, and the origin pause after a
#: capped refusal doubles up to 4 s, jittered.
SHIPPED: dict[str, Any] = {
    "max_links": 10,
    "max_links_in": 20,
    "seeders_accept_all": True,
    "lease_cap": 16,
    "early_lookup": True,
    "piece_round_down": True,
    "scheduler": {"per_peer": 1, "origin_slots": 2, "min_inflight": 4},
    "capped_self_refused": True,
    "origin_retry_max": 4.0,
    "origin_runs": True,
}

#: Label of each code version in docs/benchmarks.md (change them here only).
#: ``SHIPPED`` as the simulator first ran it (most rows of docs/benchmarks.md): without the
#: three details the code got after those runs (``min_inflight``, the doubling origin pause,
#: a capped refusal that names the asker counted as a refusal).
FIRST_CUT: dict[str, Any] = {
    **{
        k: v
        for k, v in SHIPPED.items()
        if k not in ("capped_self_refused", "origin_retry_max", "origin_runs")
    },
    "scheduler": {"per_peer": 1, "origin_slots": 2},
}

VERSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "before": (f"before (as of {BEFORE_COMMIT})", BEFORE),
    "shipped": ("shipped", SHIPPED),
    "first": ("shipped as first simulated", FIRST_CUT),
}


def fetch_config(seed: int, **overrides: Any) -> SchedulerConfig:
    """The SchedulerConfig ``BlobFetch`` builds (read from peer/mesh/fetch.py as it is)."""
    shipped: dict[str, Any] = {"seed": seed, "origin_slots": getattr(_fetch, "ORIGIN_SLOTS", 2)}
    if (guess := getattr(_fetch, "PEER_RATE_GUESS", None)) is not None:
        shipped["initial_rate"] = guess
    if (per_peer := getattr(_fetch, "PER_PEER", None)) is not None:
        shipped["per_peer"] = per_peer
    return SchedulerConfig(**{**shipped, **overrides})


def lower_bound(cfg: Config) -> float:
    """max{F/u_s, F/d_min, N F / (u_s + sum u_i)} (Kumar & Ross) for this scenario."""
    ups, downs = capacities(cfg)
    f = cfg.size
    return max(
        f / cfg.origin_up,
        f / float(np.min(downs)),
        cfg.nodes * f / (cfg.origin_up + float(np.sum(ups))),
    )


def capacities(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Upload and download capacity of every node (slow nodes are the first ids)."""
    slow = round(cfg.nodes * cfg.slow_fraction)
    ups = np.full(cfg.nodes, cfg.up)
    downs = np.full(cfg.nodes, cfg.down)
    ups[:slow] *= cfg.slow_factor
    downs[:slow] *= cfg.slow_factor
    return ups, downs


@dataclass
class Result:
    """What one run measured (times are per node: completion minus arrival)."""

    cfg: Config
    bound: float
    times: np.ndarray  # completion times of nodes that finished
    ids: np.ndarray  # ... and their node ids (slow nodes are ids below slow_fraction × N)
    arrivals: np.ndarray
    left_early: int
    unfinished: int
    origin_bytes: float
    egress_series: np.ndarray  # origin bytes per cfg.bucket
    upload_series: np.ndarray  # bytes all nodes sent per cfg.bucket
    counters: dict[str, float]
    wall: float
    sim_time: float
    costs: dict[str, tuple[int, float]]  # real-code call counts and total seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "cfg": dataclasses.asdict(self.cfg),
            "bound": self.bound,
            "times": self.times.tolist(),
            "ids": self.ids.tolist(),
            "arrivals": self.arrivals.tolist(),
            "left_early": self.left_early,
            "unfinished": self.unfinished,
            "origin_bytes": self.origin_bytes,
            "egress_series": self.egress_series.tolist(),
            "upload_series": self.upload_series.tolist(),
            "counters": self.counters,
            "wall": self.wall,
            "sim_time": self.sim_time,
            "costs": self.costs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        arrays = ("times", "ids", "arrivals", "egress_series", "upload_series")
        fields = {k: (np.array(v) if k in arrays else v) for k, v in data.items()}
        fields.setdefault("ids", np.array([], dtype=int))
        fields["cfg"] = Config(**data["cfg"])
        fields["costs"] = {k: tuple(v) for k, v in data["costs"].items()}
        return cls(**fields)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.times, q)) if self.times.size else math.nan

    def summary(self) -> dict[str, float]:
        f = self.cfg.size
        return {
            "p50": self.pct(50),
            "p99": self.pct(99),
            "max": float(self.times.max()) if self.times.size else math.nan,
            "bound": self.bound,
            "p50/bound": self.pct(50) / self.bound,
            "p99/bound": self.pct(99) / self.bound,
            "max/bound": (float(self.times.max()) if self.times.size else math.nan) / self.bound,
            "origin/F": self.origin_bytes / f,
        }
