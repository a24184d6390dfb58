"""The swarm: N shoal nodes pulling one blob, on the real scheduler and the real tracker.

What is real and what is modelled
---------------------------------
Real code, called as the node calls it:

* ``peer.mesh.scheduler.PieceScheduler`` (one per downloading node, configured as
  ``peer.mesh.fetch.BlobFetch`` configures it), fed ``on_bitfield``/``on_have``/
  ``on_piece_ok``/``on_busy``/``on_timeout``/``on_peer_gone`` and asked
  ``next_requests(now)``;
* ``peer.mesh.pieces.PiecePlan.for_size`` and ``Bitfield``;
* ``tracker.registry.Registry`` (announce, leave, lookup with ``tracker.model.rank`` /
  ``tier_of``, and origin-fetch leases through ``tracker.records``), fed the same protocol
  messages the node sends.

Modelled after ``peer/mesh/fetch.py`` and ``peer/mesh/swarm.py`` (constants imported
from there where they exist):

* a download announces itself ``ANNOUNCE_DEBOUNCE`` after it starts and when it ends
  (``MIN_ANNOUNCE_GAP`` apart), and every ``interval`` (0.9–1.1×) otherwise, with
  ``load`` = peers known to the fetch and ``upload_slots`` = ``MAX_REQUESTS``;
* it looks holders up at start and every ``LOOKUP_INTERVAL`` (doubling up to
  ``LOOKUP_INTERVAL_MAX`` while lookups find nobody else), with
  ``limit = 2 × MAX_LINKS_PER_BLOB``, remembers every address returned and links to the
  first ``MAX_LINKS_PER_BLOB`` of them (links it already has are kept: like
  ``Swarm.find_peers``, nothing caps the total);
* a link exchanges ``Interested`` + ``Bitfield`` both ways; every verified piece is
  announced with ``Have`` to every linked peer;
* an origin assignment first takes a lease at the tracker (``LEASE_TTL``); a refused lease
  is ``on_busy(ORIGIN, i, now, min(max(expires - now, 0.2), LEASE_TTL))`` plus a link to
  the holder if its address is known, and one refused for the blob's cap (``capped``) is
  ``on_busy(ORIGIN, i, now, ORIGIN_RETRY)`` plus ``pause_origin``; a granted one is an
  HTTP range request to the origin (one channel per request, after ``origin_rtt``). With
  ``Config.lease_cap`` (shipped) the lease is renewed every ``LEASE_TTL / 2`` while the
  fetch runs, the piece's hash goes to the tracker (``Records.put_pieces``, which ends the
  fetch there) and a failed or abandoned fetch releases it; without (as of 054b7a7) it is
  neither renewed nor released;
* a piece from a peer is accepted only if its hash is known: the node refreshes the
  tracker's piece hashes at most every ``HASH_REFRESH`` s, otherwise the piece is thrown
  away with ``on_busy(peer, i, now, 0.2)``; a request unanswered after
  ``PEER_PIECE_TIMEOUT`` is cancelled with ``on_timeout``;
* a departing node leaves the tracker, its links break (``on_peer_gone`` at each peer,
  its transfers are lost) and its leases run out on their own.

The network (:mod:`bench.sim.network`) is fluid: per-link FIFO channels, max-min fair
over node upload and download capacities and the origin's upload. Time advances in steps
of ``dt``; events inside a step keep their exact times, and a node re-plans
(``next_requests``) at the end of every step in which something happened to it, or
``TICK`` after its last plan. A tracker round trip (lease, hash refresh) costs one step.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.sim.network import Network
from peer.mesh import fetch as _fetch
from peer.mesh.fetch import (
    HASH_REFRESH,
    LEASE_TTL,
    LOOKUP_INTERVAL,
    LOOKUP_INTERVAL_MAX,
    PEER_PIECE_TIMEOUT,
    RUN_CHECK,
    TICK,
)
from peer.mesh.fetch_origin import INSIST_AFTER, RUN_CHECK_ALONE
from peer.mesh.pieces import MAX_PIECE_SIZE, MIN_PIECE_SIZE, Bitfield, PiecePlan
from peer.mesh.scheduler import ORIGIN, Origin, PieceScheduler, SchedulerConfig
from tracker import protocol as p
from tracker.model import DEFAULT_ANNOUNCE_INTERVAL, Policy
from tracker.registry import Registry


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


__all__ = [
    "BEFORE",
    "BEFORE_COMMIT",
    "SHIPPED",
    "VERSIONS",
    "Config",
    "Result",
    "Simulation",
    "fetch_config",
    "lower_bound",
]

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


class _Req:
    __slots__ = ("ch", "group", "issued", "node", "piece", "renewed", "source", "start_at")

    def __init__(self, node: int, source: int | Origin, piece: int, issued: float) -> None:
        self.node = node
        self.source = source
        self.piece = piece
        self.issued = issued
        self.ch = -1
        self.start_at = issued
        self.group: list[_Req] | None = None  # an origin run: its requests, in wire order
        self.renewed = issued  # (a run's first request) its last lease renewal


class _Node:
    __slots__ = (
        "announce_at",
        "arrival",
        "bits",
        "capped_streak",
        "contiguous",
        "dead",
        "dirty",
        "done_at",
        "down",
        "from_origin",
        "from_peers",
        "hash_refreshed",
        "id",
        "known",
        "last_announce",
        "last_plan",
        "leave_at",
        "links",
        "lookup_wait",
        "name",
        "out",
        "per_src",
        "periodic_at",
        "ready",
        "sched",
        "session",
        "up",
    )

    def __init__(self, i: int, up: float, down: float, arrival: float) -> None:
        self.id = i
        self.capped_streak = 0
        self.name = f"node-{i:05d}"
        self.session = i.to_bytes(16, "big")
        self.up = up
        self.down = down
        self.arrival = arrival
        self.leave_at = math.inf
        self.sched: PieceScheduler[int] | None = None
        self.bits: Bitfield | None = None
        self.contiguous = 0
        self.done_at = math.nan
        self.dead = False
        self.dirty = False
        self.links: set[int] = set()  # peers touched for the blob (both directions)
        self.known: set[int] = set()  # addresses learned from lookups
        self.out: dict[tuple[int | Origin, int], _Req] = {}
        self.per_src: dict[int, int] = {}  # outstanding requests per peer
        self.hash_refreshed = -math.inf
        self.last_plan = -math.inf
        self.last_announce = -math.inf
        self.lookup_wait = 0.0  # BlobFetch._discover's interval (0: no lookup yet)
        self.announce_at = math.inf
        self.periodic_at = math.inf
        self.from_origin = 0
        self.from_peers = 0
        self.ready = True  # may plan requests (see Config.wait_first_lookup)


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


class Simulation:
    """One run of :class:`Config`; call :meth:`run`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.plan = cfg.piece_plan()
        self.n_pieces = self.plan.count
        self.rng = random.Random(cfg.seed)
        self.jitter = random.Random(cfg.seed + 1)  # the origin pause's jitter
        n = cfg.nodes
        ups, downs = capacities(cfg)
        if cfg.arrival == "flash":
            arrivals = [0.0] * n
        elif cfg.arrival == "rolling":
            arrivals = sorted(self.rng.uniform(0.0, cfg.spread) for _ in range(n))
        elif cfg.arrival == "stagger":  # node k starts at k x spread (bench/swarm.py rolling)
            arrivals = [k * cfg.spread for k in range(n)]
        else:
            raise ValueError(f"unknown arrival {cfg.arrival!r}")
        order = list(range(n))
        self.rng.shuffle(order)  # slow nodes arrive anywhere in a rolling update
        self.nodes = [
            _Node(i, float(ups[i]), float(downs[i]), arrivals[order[i]]) for i in range(n)
        ]
        self.origin = n  # endpoint id of the origin
        self.net = Network([*ups.tolist(), cfg.origin_up], [*downs.tolist(), math.inf], tol=cfg.tol)
        # The tracker's own cap of origin fetches per blob (Policy.max_origin_fetches) when
        # it has one; otherwise the model stands in for it (Simulation._capped).
        self.tracker_caps = "max_origin_fetches" in {f.name for f in dataclasses.fields(Policy)}
        cap = {"max_origin_fetches": cfg.lease_cap or 0} if self.tracker_caps else {}
        self.registry = Registry(Policy(**cap), rng=random.Random(cfg.seed + 1))
        self.sched_cfg = dict(cfg.scheduler)
        self.endgame = fetch_config(0, **self.sched_cfg).endgame_pieces
        self.per_peer = fetch_config(0, **self.sched_cfg).per_peer
        self.pending = {node.id for node in self.nodes}
        self.links: dict[tuple[int, int], int] = {}  # (src, dst) -> channel
        self.inflight_leases: dict[int, tuple[float, str]] = {}  # piece -> (expiry, holder)
        self.recorded: dict[int, int] = {}  # piece -> node that recorded its hash first
        self.hash_at = [math.inf] * self.n_pieces  # when each piece's hash reached the tracker
        self.events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.dt = cfg.step()
        self.counters: dict[str, float] = dict.fromkeys(
            (
                "requests_peer",
                "requests_origin",
                "lease_refused",
                "origin_fetches",
                "origin_runs",
                "runs_cut",
                "origin_duplicate",
                "hedges",
                "endgame",
                "cancelled",
                "wasted_bytes",
                "hash_miss",
                "timeouts",
                "lookups",
                "links",
                "pieces_from_peers",
                "pieces_from_origin",
                "plans",
                "steps",
                "origin_peak",
                "first_p2p_at",
                "origin_done_at",
                "links_max",
            ),
            0,
        )
        self.origin_fetched = [0] * self.n_pieces
        self.seeders: list[int] = []  # nodes that completed (they never leave)
        self.origin_open = 0
        self.costs: dict[str, list[float]] = {
            k: [0, 0.0]
            for k in (
                "next_requests",
                "on_have",
                "on_bitfield",
                "on_piece_ok",
                "lookup",
                "lease",
                "put_pieces",
                "announce",
                "maxmin",
            )
        }
        self.egress: list[float] = []
        self.link_counts: list[int] = []
        leavers = self.rng.sample(range(n), round(n * cfg.leave_fraction))
        self.leavers = set(leavers)
        for i in range(n):
            node = self.nodes[i]
            self._push(node.arrival, "arrive", i)
            self._announce(node, min(0.0, node.arrival) - 1.0)  # the node's service start

    # -- events --------------------------------------------------------------------------
    def _push(self, t: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, payload))

    def _timed(self, name: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        cost = self.costs[name]
        cost[0] += 1
        cost[1] += time.perf_counter() - t0
        return out

    # -- tracker -------------------------------------------------------------------------
    def _announce(self, node: _Node, t: float) -> None:
        held: tuple[p.BlobHeld, ...] = ()
        progress: tuple[p.BlobInProgress, ...] = ()
        if not math.isnan(node.done_at):
            held = (p.BlobHeld(DIGEST, self.cfg.size),)
        elif node.sched is not None:
            written = min(node.contiguous * self.plan.piece_size, self.cfg.size)
            progress = (p.BlobInProgress(DIGEST, self.cfg.size, written),)
        msg = p.Announce(
            peer_id=node.name, session=node.session, host="10.0.0.1", port=5051,
            held=held, in_progress=progress, upload_slots=MAX_REQUESTS,
            load=len(node.links) if node.sched is not None else 0,
            bytes_from_origin=node.from_origin, bytes_from_peers=node.from_peers,
        )  # fmt: skip
        reply = self._timed("announce", self.registry.announce, msg, EPOCH + t)
        node.last_announce = t
        node.announce_at = math.inf
        interval = reply.interval or DEFAULT_ANNOUNCE_INTERVAL
        # one timer, restarted by every announce (Swarm._announce_loop)
        node.periodic_at = t + interval * (0.9 + 0.2 * self.rng.random())
        self._push(node.periodic_at, "announce", node.id)

    def _announce_soon(self, node: _Node, t: float) -> None:
        at = max(t + ANNOUNCE_DEBOUNCE, node.last_announce + MIN_ANNOUNCE_GAP)
        if at < node.announce_at:
            node.announce_at = at
            self._push(at, "announce_soon", node.id)

    def _lookup(self, node: _Node, t: float, limit: int) -> list[int]:
        q = p.Lookup(digest=DIGEST, peer_id=node.name, limit=limit)
        reply = self._timed("lookup", self.registry.lookup, q, EPOCH + t)
        self.counters["lookups"] += 1
        ids = [int(a.peer_id[5:]) for a in reply.peers]
        node.known.update(ids)
        return ids

    # -- links ---------------------------------------------------------------------------
    def _link(self, a: _Node, b: _Node, t: float, *, force: bool = False) -> None:
        """``a`` dials ``b`` for the blob: Interested + Bitfield both ways.

        ``force``: past the link caps (a link to the only known holder of a piece).
        """
        if b.id in a.links or b.dead or a.dead or a.id == b.id:
            return
        cap = None if force else self.cfg.max_links
        accept = self.cfg.max_links_in or cap
        if self.cfg.seeders_accept_all and not math.isnan(b.done_at):
            accept = None  # a node that holds the whole blob takes every asker
        if cap is not None and (
            len(a.links) >= cap or (accept is not None and len(b.links) >= accept)
        ):
            return
        self.counters["links"] += 1
        a.links.add(b.id)
        b.links.add(a.id)
        for me, them in ((a, b), (b, a)):
            if me.sched is not None:
                bits = self._bits_of(them)
                if bits is not None:
                    self._timed("on_bitfield", me.sched.on_bitfield, them.id, bits)
                    me.dirty = True

    def _bits_of(self, node: _Node) -> Bitfield | None:
        if not math.isnan(node.done_at):
            return Bitfield.full(self.n_pieces)
        if node.bits is not None:
            return Bitfield.from_bytes(node.bits.to_bytes(), self.n_pieces)
        return None

    def _channel(self, src: int, dst: int) -> int:
        ch = self.links.get((src, dst))
        if ch is None:
            ch = self.links[(src, dst)] = self.net.open(src, dst)
        return ch

    # -- node lifecycle --------------------------------------------------------------------
    def _arrive(self, node: _Node, t: float) -> None:
        overrides = dict(self.sched_cfg)
        if self.cfg.origin_min_down is not None and node.down < self.cfg.origin_min_down:
            overrides["origin"] = False
        cfg = fetch_config((node.id * 2654435761) & 0xFFFF, **overrides)
        node.sched = PieceScheduler(self.plan, config=cfg)
        node.bits = Bitfield(self.n_pieces)
        node.dirty = True
        if node.id in self.leavers:
            self._push(t + self.rng.uniform(0.2, 1.0) * lower_bound(self.cfg), "leave", node.id)
        if self.cfg.mode == "mesh":
            node.ready = not self.cfg.wait_first_lookup
            self._lookup(node, t, MAX_LINKS_PER_BLOB)  # Swarm.blob_size: addresses only
            self._push(t + (0.1 if self.cfg.early_lookup else 0.0), "lookup", node.id)
            self._announce_soon(node, t)

    def _find_peers(self, node: _Node, t: float) -> None:
        if node.sched is None or node.dead:
            return
        ids = self._lookup(node, t, MAX_LINKS_PER_BLOB * 2)
        for i in ids[:MAX_LINKS_PER_BLOB]:
            self._link(node, self.nodes[i], t)
        if not node.ready:
            node.ready = node.dirty = True
        # as BlobFetch._discover: a lookup that finds nobody else doubles the wait (not the
        # first, which may come before anyone announced: _discover looks again at once)
        found = bool(ids) or node.lookup_wait == 0.0
        node.lookup_wait = (
            LOOKUP_INTERVAL if found else min(2 * node.lookup_wait, LOOKUP_INTERVAL_MAX)
        )
        self._push(t + node.lookup_wait, "lookup", node.id)

    def _complete(self, node: _Node, t: float) -> None:
        node.done_at = t
        self.seeders.append(node.id)
        self.pending.discard(node.id)
        node.sched = None
        node.bits = None
        for req in list(node.out.values()):
            self._cancel(node, req, t)
        if self.cfg.mode == "mesh":
            self._announce_soon(node, t)

    def _leave(self, node: _Node, t: float) -> None:
        if node.dead or not math.isnan(node.done_at):
            return
        node.dead = True
        self.pending.discard(node.id)
        self.registry.leave(p.Leave(peer_id=node.name, session=node.session), EPOCH + t)
        for req in list(node.out.values()):
            self._cancel(node, req, t)
        node.sched = None
        for other_id in node.links:
            other = self.nodes[other_id]
            other.links.discard(node.id)
            for key in [k for k in other.out if k[0] == node.id]:
                req = other.out[key]
                self._out_del(other, req)
                self._drop(req, t)
            if other.sched is not None:
                other.sched.on_peer_gone(node.id)
                other.dirty = True
        for key in [k for k in self.links if node.id in k]:
            _, wasted = self.net.close(self.links.pop(key))
            self.counters["wasted_bytes"] += wasted
        node.links.clear()

    # -- requests ------------------------------------------------------------------------
    @staticmethod
    def _out_add(node: _Node, req: _Req) -> None:
        node.out[(req.source, req.piece)] = req
        if not isinstance(req.source, Origin):
            node.per_src[req.source] = node.per_src.get(req.source, 0) + 1

    @staticmethod
    def _out_del(node: _Node, req: _Req) -> None:
        del node.out[(req.source, req.piece)]
        if not isinstance(req.source, Origin):
            left = node.per_src[req.source] - 1
            if left:
                node.per_src[req.source] = left
            else:
                del node.per_src[req.source]

    def _plan(self, node: _Node, t: float) -> None:
        sched = node.sched
        assert sched is not None
        node.dirty = False
        node.last_plan = t
        self.counters["plans"] += 1
        assignments = self._timed("next_requests", sched.next_requests, t)
        cap = self.cfg.inflight_cap
        if cap is not None:  # what-if: the fetch hands the excess straight back
            room = max(0, cap - len(node.out))
            for a in assignments[room:]:
                sched.on_busy(a.source, a.piece, t, 0.0)
            assignments = assignments[:room]
        for a in assignments:
            source, index = a.source, a.piece
            if len(sched.sources(index)) > 1:  # a second source for a piece in flight
                self.counters["endgame" if sched.missing <= self.endgame else "hedges"] += 1
            req = _Req(node.id, source, index, t)
            self._out_add(node, req)
            if isinstance(source, Origin):
                self._request_origin(node, req, t)
            else:
                self._request_peer(node, req, t)

    def _request_peer(self, node: _Node, req: _Req, t: float) -> None:
        src = self.nodes[req.source]  # type: ignore[index]
        self.counters["requests_peer"] += 1
        if src.dead or src.id not in node.links:
            self._out_del(node, req)
            node.sched.on_peer_gone(src.id)  # type: ignore[union-attr]
            return
        req.ch = self._channel(src.id, node.id)
        self.net.push(req.ch, req, self.plan.length(req.piece))
        self._push(t + PEER_PIECE_TIMEOUT, "timeout", req)

    def _request_origin(self, node: _Node, req: _Req, t: float) -> None:
        self.counters["requests_origin"] += 1
        cfg = self.cfg
        if cfg.mode == "mesh":
            if cfg.lease_cap is not None and self._capped(node, req, t):
                return
            want = self._run_wanted(node, req.piece) if cfg.origin_runs else 1
            # as BlobFetch: insist after INSIST_AFTER capped refusals if no peer has it
            insist = (
                node.capped_streak >= INSIST_AFTER
                and node.sched is not None
                and not node.sched.availability(req.piece)
            )
            lease = p.LeaseRequest(
                digest=DIGEST, piece_index=req.piece, peer_id=node.name,
                session=node.session, ttl=cfg.lease_ttl, count=want, insist=insist,
            )  # fmt: skip
            reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
            # as Swarm.lease: a refusal naming ourselves counts as a grant (even a capped one)
            mine = reply.holder == node.name and not (
                cfg.capped_self_refused and getattr(reply, "capped", False)
            )
            if not reply.granted and not mine:
                self.counters["lease_refused"] += 1
                # a refusal for the blob's cap pauses the origin (expires None), one for the
                # piece backs that piece off; it arrives one tracker round trip (one step) later
                capped = getattr(reply, "capped", False)
                expires = None if capped else reply.expires_at - EPOCH
                self._push(t + self.dt, "refused", (req, reply.holder, expires))
                return
            node.capped_streak = 0
            self.inflight_leases[req.piece] = (reply.expires_at - EPOCH, node.name)
            if reply.granted and min(reply.count, want) > 1:
                self._run(node, req, min(reply.count, want), t)
            if cfg.lease_renew or cfg.lease_cap is not None:
                self._push(t + cfg.lease_ttl / 2, "renew", req)
        req.start_at = t + cfg.origin_rtt
        self._push(req.start_at, "origin_start", req)

    def _run_wanted(self, node: _Node, index: int) -> int:
        """As ``BlobFetch._run_wanted``: the piece and the pending ones after it (one until
        a piece came from the origin)."""
        assert node.sched is not None
        if not node.from_origin:
            return 1
        limit = min(p.MAX_LEASE_RUN, max(1, _fetch.RUN_BYTES // self.plan.piece_size))
        n = 1
        while n < limit and node.sched.is_pending(index + n):
            n += 1
        return n

    def _run(self, node: _Node, head: _Req, count: int, t: float) -> None:
        """The lease of ``head`` covers ``count`` pieces: one origin request for all."""
        assert node.sched is not None
        self.counters["origin_runs"] += 1
        span = range(head.piece, head.piece + count)
        taken = set(node.sched.extend_origin(head.piece, span, t))
        group = [head]
        for index in span[1:]:
            req = _Req(node.id, ORIGIN, index, t)
            if index in taken:  # else a spare copy: in flight elsewhere, or ours already
                self._out_add(node, req)
            group.append(req)
        for req in group:
            req.group = group

    def _check_run(self, node: _Node, req: _Req, t: float) -> None:
        """As ``BlobFetch._renew``: renew the run (after its 1st, 2nd, 4th... piece, every
        piece while peers are linked, and every ``RUN_CHECK``, ``RUN_CHECK_ALONE`` while
        the node has no link) and stop it where the tracker
        says other nodes want the rest (after ``req``, the piece delivered or on the wire,
        at the earliest). The renewal's round trip is not modelled: the cut is at once."""
        group = req.group
        assert group is not None
        assert node.sched is not None
        head = group[0]
        head.renewed = t
        lease = p.LeaseRequest(
            digest=DIGEST, piece_index=head.piece, peer_id=node.name, session=node.session,
            ttl=self.cfg.lease_ttl, count=len(group),
        )  # fmt: skip
        reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
        if not reply.granted:
            return
        end = max(head.piece + reply.count, req.piece + 1)
        cut = [r for r in group if r.piece >= end]
        if not cut:
            return
        self.counters["runs_cut"] += 1
        del group[len(group) - len(cut) :]
        for member in cut:
            wasted = self.net.cancel(member.ch, member)
            self.counters["wasted_bytes"] += wasted
            if not wasted:  # never left the origin: not a fetch (of a duplicate) after all
                self.origin_fetched[member.piece] -= 1
            member.ch = -1
            member.group = None
            if node.out.get((ORIGIN, member.piece)) is member:
                self._out_del(node, member)
                node.sched.on_busy(ORIGIN, member.piece, t, 0.0)
            self._release(member, t)
        node.dirty = True

    def _run_timer(self, head: _Req, t: float) -> None:
        """``RUN_CHECK`` after the run's last renewal (``RUN_CHECK_ALONE`` while the node has
        no link): check it, if it has pieces to cut."""
        group = head.group
        node = self.nodes[head.node]
        if group is None or node.dead or node.sched is None:
            return
        on_wire = [r for r in group if r.ch >= 0]
        check = RUN_CHECK if node.links else RUN_CHECK_ALONE
        if len(on_wire) > 1 and t >= head.renewed + check:
            self._check_run(node, on_wire[0], t)
        if len(on_wire) > 1:
            self._push(max(t, head.renewed) + check, "run_check", head)

    @staticmethod
    def _run_going(node: _Node, req: _Req) -> bool:
        """Another request of ``req``'s origin run still waits for its piece."""
        return req.group is not None and any(
            r is not req and node.out.get((ORIGIN, r.piece)) is r for r in req.group
        )

    def _release(self, req: _Req, t: float) -> None:
        """An origin fetch failed or was abandoned: hand its lease back (with ``lease_cap``).

        Before the cap (``lease_cap`` None) a lease was neither renewed nor released.
        """
        if self.cfg.lease_cap is None:
            return
        node = self.nodes[req.node]
        if self.inflight_leases.get(req.piece, (0.0, ""))[1] == node.name:
            del self.inflight_leases[req.piece]
        lease = p.LeaseRequest(
            digest=DIGEST, piece_index=req.piece, peer_id=node.name, session=node.session, ttl=0.0
        )
        self._timed("lease", self.registry.lease, lease, EPOCH + t)

    def _record_hash(self, node: _Node, index: int, t: float) -> None:
        """The piece's hash goes to the tracker (which ends the fetch there: the lease no
        longer counts against the blob's cap, but guards the piece until it expires)."""
        self.hash_at[index] = min(self.hash_at[index], t)
        self.inflight_leases.pop(index, None)
        self.recorded.setdefault(index, node.id)
        hashes = [b""] * self.n_pieces
        hashes[index] = index.to_bytes(32, "big")
        record = p.PieceHashes(
            digest=DIGEST, size=self.cfg.size, piece_size=self.plan.piece_size,
            hashes=tuple(hashes), peer_id=node.name,
        )  # fmt: skip
        self._timed("put_pieces", self.registry.records.put_pieces, record)

    def _capped(self, node: _Node, req: _Req, t: float) -> bool:
        """Origin coordination the tracker lacks (see ``Config.lease_cap``)."""
        recorder = self.recorded.get(req.piece)
        if (
            self.cfg.lease_refuse_recorded
            and recorder is not None
            and not self.nodes[recorder].dead
        ):
            # the piece's hash is recorded: its recorder has it, fetch it from there
            self.counters["lease_refused"] += 1
            holder = self.nodes[recorder].name
            self._push(t + self.dt, "refused", (req, holder, t + self.cfg.lease_ttl))
            return True
        if self.cfg.lease_refuse_held and req.piece in self.recorded and self.seeders:
            self.counters["lease_refused"] += 1
            holder = self.nodes[self.rng.choice(self.seeders)].name
            self._push(t + self.dt, "refused", (req, holder, None))
            return True
        if self.tracker_caps:  # the real tracker counts and refuses
            return False
        live = [v for v in self.inflight_leases.values() if v[0] > t]
        mine = self.inflight_leases.get(req.piece, (0.0, ""))[1] == node.name
        if len(live) >= self.cfg.lease_cap and not mine:  # type: ignore[operator]
            self.counters["lease_refused"] += 1
            self._push(t + self.dt, "refused", (req, min(live)[1], None))
            return True
        return False

    def _renew(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        mine = node.out.get((ORIGIN, req.piece)) is req or self._run_going(node, req)
        if not mine or node.dead:
            return
        lease = p.LeaseRequest(
            digest=DIGEST, piece_index=req.piece, peer_id=node.name, session=node.session,
            ttl=self.cfg.lease_ttl, count=len(req.group or [req]),
        )  # fmt: skip
        reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
        if reply.granted:
            self.inflight_leases[req.piece] = (reply.expires_at - EPOCH, node.name)
            self._push(t + self.cfg.lease_ttl / 2, "renew", req)

    def _refused(self, req: _Req, holder: str, expires: float | None, t: float) -> None:
        node = self.nodes[req.node]
        if node.out.get((ORIGIN, req.piece)) is not req or node.sched is None:
            return
        self._out_del(node, req)
        holder_id = int(holder[5:])
        if self.cfg.lease_refuse_recorded:  # what-if: the refusal carries the address
            self._link(node, self.nodes[holder_id], t, force=True)
        elif holder_id in node.known:  # Swarm.want_link (within max_links, if capped)
            self._link(node, self.nodes[holder_id], t)
        if expires is None:  # lease cap: back the origin off for every piece
            pause = getattr(node.sched, "pause_origin", None)
            if pause is not None:  # as BlobFetch does (fetch.ORIGIN_RETRY, ORIGIN_RETRY_MAX)
                wait = self.cfg.origin_retry
                if self.cfg.origin_retry_max is not None:
                    wait = min(wait * 2**node.capped_streak, self.cfg.origin_retry_max)
                    wait *= self.jitter.uniform(0.5, 1.5)
                    node.capped_streak += 1
                node.sched.on_busy(ORIGIN, req.piece, req.issued, wait)
                pause(req.issued, wait)
            else:
                assert node.bits is not None
                for index in range(self.n_pieces):
                    if index not in node.bits and (ORIGIN, index) not in node.out:
                        node.sched.on_busy(ORIGIN, index, t, self.cfg.origin_retry)
        else:
            wait = min(max(expires - t, 0.2), LEASE_TTL)
            node.sched.on_busy(ORIGIN, req.piece, req.issued, wait)
        node.dirty = True

    def _origin_start(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        if node.out.get((ORIGIN, req.piece)) is not req and not self._run_going(node, req):
            self._release(req, t)  # cancelled before its first byte
            return
        self.counters["origin_fetches"] += 1
        ch = self.net.open(self.origin, node.id)
        if req.group is not None:
            self._push(t + (RUN_CHECK if node.links else RUN_CHECK_ALONE), "run_check", req)
        for member in req.group or [req]:
            self.origin_fetched[member.piece] += 1
            if self.origin_fetched[member.piece] > 1:
                self.counters["origin_duplicate"] += 1
            member.ch = ch
            self.net.push(ch, member, self.plan.length(member.piece))
        self.origin_open += 1
        self.counters["origin_peak"] = max(self.counters["origin_peak"], self.origin_open)

    def _cancel(self, node: _Node, req: _Req, t: float) -> None:
        """Abandon ``req`` on the wire (a loser of a hedge/endgame race, or a timeout)."""
        going = self._run_going(node, req)  # BlobFetch._cancel: a run goes on for the rest
        if node.out.get((req.source, req.piece)) is req:
            self._out_del(node, req)
        if not going:
            self._drop(req, t)

    def _drop(self, req: _Req, t: float) -> None:
        if req.ch < 0:
            return
        self.counters["cancelled"] += 1
        if isinstance(req.source, Origin):
            _, wasted = self.net.close(req.ch)
            self.origin_open -= 1
            for member in req.group or [req]:
                member.ch = -1
                self._release(member, t)
        else:
            wasted = self.net.cancel(req.ch, req)
        req.ch = -1
        self.counters["wasted_bytes"] += wasted

    def _timeout(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        if node.out.get((req.source, req.piece)) is not req or node.sched is None:
            return
        self.counters["timeouts"] += 1
        self._cancel(node, req, t)
        node.sched.on_timeout(req.source, req.piece, t)
        node.dirty = True

    def _delivered(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        index = req.piece
        length = self.plan.length(index)
        if req.group is not None and req.ch >= 0 and req is not req.group[-1]:
            got = req.piece + 1 - req.group[0].piece
            if node.links or not got & (got - 1):  # linked, or its 1st, 2nd, 4th... piece
                self._check_run(node, req, t)
        last = req.group is None or req is req.group[-1]  # a run's channel ends with it
        if isinstance(req.source, Origin) and req.ch >= 0 and last:
            self.net.close(req.ch)
            self.origin_open -= 1
        req.ch = -1
        if node.out.get((req.source, index)) is not req:
            self.counters["wasted_bytes"] += length  # cancelled while in the same step
            if isinstance(req.source, Origin) and req.group is None:
                self._release(req, t)  # (a run's spare copy: BlobFetch keeps its lease)
            return
        self._out_del(node, req)
        sched = node.sched
        assert sched is not None
        assert node.bits is not None
        if isinstance(req.source, Origin):
            self._record_hash(node, index, t)
            node.from_origin += length
            self.counters["pieces_from_origin"] += 1
        else:
            if self.hash_at[index] > node.hash_refreshed:
                if t - node.hash_refreshed > HASH_REFRESH:
                    node.hash_refreshed = t
                else:  # BlobFetch._hash_of: no hash yet, the piece is not taken
                    self.counters["hash_miss"] += 1
                    self.counters["wasted_bytes"] += length
                    sched.on_busy(req.source, index, t, 0.2)
                    node.dirty = True
                    return
            node.from_peers += length
            if not self.counters["pieces_from_peers"]:
                self.counters["first_p2p_at"] = t
            self.counters["pieces_from_peers"] += 1
        if index in node.bits:
            return
        losers = self._timed("on_piece_ok", sched.on_piece_ok, req.source, index, t)
        for loser in losers:
            other = node.out.get((loser.source, loser.piece))
            if other is not None:
                self._cancel(node, other, t)
        node.bits.set(index)
        while node.contiguous < self.n_pieces and node.contiguous in node.bits:
            node.contiguous += 1
        sched.set_read_position(node.contiguous)
        node.dirty = True
        t0 = time.perf_counter()
        calls = 0
        me, nodes, per_peer = node.id, self.nodes, self.per_peer
        for peer_id in node.links:
            peer = nodes[peer_id]
            if peer.sched is not None:
                peer.sched.on_have(me, index)
                calls += 1
                # a Have can only lead to a request if we may still ask that peer more
                if peer.per_src.get(me, 0) < per_peer:
                    peer.dirty = True
        cost = self.costs["on_have"]
        cost[0] += calls
        cost[1] += time.perf_counter() - t0
        if sched.done:
            self._complete(node, t)

    # -- the loop ------------------------------------------------------------------------
    def _handle(self, kind: str, payload: Any, t: float) -> None:
        if kind == "arrive":
            self._arrive(self.nodes[payload], t)
        elif kind == "lookup":
            self._find_peers(self.nodes[payload], t)
        elif kind == "announce":
            node = self.nodes[payload]
            if not node.dead and t == node.periodic_at:
                self._announce(node, t)
        elif kind == "announce_soon":
            node = self.nodes[payload]
            if not node.dead and node.announce_at == t:
                self._announce(node, t)
        elif kind == "origin_start":
            self._origin_start(payload, t)
        elif kind == "refused":
            req, holder, expires = payload
            self._refused(req, holder, expires, t)
        elif kind == "renew":
            self._renew(payload, t)
        elif kind == "run_check":
            self._run_timer(payload, t)
        elif kind == "timeout":
            self._timeout(payload, t)
        elif kind == "leave":
            self._leave(self.nodes[payload], t)
        else:  # pragma: no cover
            raise ValueError(kind)

    def run(self, *, progress: bool = False) -> Result:
        cfg = self.cfg
        wall0 = time.perf_counter()
        t = min(n.arrival for n in self.nodes)
        dt = self.dt
        last_report = wall0
        egress_prev = 0.0
        origin = self.origin
        bucket_bytes = np.zeros(int(cfg.max_time / cfg.bucket) + 2)
        bucket_up = np.zeros_like(bucket_bytes)
        up_prev = 0.0
        while self.pending and t < cfg.max_time and time.perf_counter() - wall0 < cfg.max_wall:
            t1 = t + dt
            idle = self.net.active == 0 and self.events and self.events[0][0] > t1
            if idle and not any(n.sched is not None for n in self.nodes):
                t1 = self.events[0][0]  # nothing moves until the next event: jump
            t_mm = time.perf_counter()
            recomputes = self.net.recomputes
            done = self.net.advance(t, t1)
            if self.net.recomputes != recomputes:
                cost = self.costs["maxmin"]
                cost[0] += 1
                cost[1] += time.perf_counter() - t_mm
            sent = float(self.net.sent[origin])
            slot = min(int(t / cfg.bucket), len(bucket_bytes) - 1)
            if not self.counters["origin_done_at"] and sent >= cfg.size * (1 - 1e-9):
                self.counters["origin_done_at"] = t1
            bucket_bytes[slot] += sent - egress_prev
            egress_prev = sent
            up_now = float(self.net.sent.sum()) - sent
            bucket_up[slot] += up_now - up_prev
            up_prev = up_now
            todo: list[tuple[float, int, str, Any]] = [
                (tt, 0, "done", item) for tt, _, item in done
            ]
            while self.events and self.events[0][0] <= t1:
                todo.append(heapq.heappop(self.events))
            todo.sort(key=lambda e: (e[0], e[1]))
            for tt, _, kind, payload in todo:
                if kind == "done":
                    self._delivered(payload, tt)
                else:
                    self._handle(kind, payload, tt)
            t = t1
            self.counters["steps"] += 1
            due = [
                node
                for node in self.nodes
                if node.sched is not None
                and node.ready
                and (
                    (node.dirty and t - node.last_plan >= cfg.replan - 1e-12)
                    or t - node.last_plan >= TICK
                )
            ]
            self.rng.shuffle(due)  # who reaches the tracker first is a race, not node order
            for node in due:
                if node.sched is not None:
                    self._plan(node, t)
            if progress and time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                finished = sum(1 for n in self.nodes if not math.isnan(n.done_at))
                print(
                    f"  t={t:7.2f}s  done {finished}/{cfg.nodes}  active flows {self.net.active}"
                    f"  origin {self.net.sent[origin] / cfg.size:.2f}F  wall {last_report - wall0:.0f}s",
                    flush=True,
                )
        self.counters["links_max"] = max(len(n.links) for n in self.nodes)
        times = np.array([n.done_at - n.arrival for n in self.nodes if not math.isnan(n.done_at)])
        arrivals = np.array([n.arrival for n in self.nodes if not math.isnan(n.done_at)])
        n_buckets = int(t / cfg.bucket) + 1
        return Result(
            cfg=cfg,
            bound=lower_bound(cfg),
            times=times,
            ids=np.array([n.id for n in self.nodes if not math.isnan(n.done_at)], dtype=int),
            arrivals=arrivals,
            left_early=sum(1 for n in self.nodes if n.dead),
            unfinished=sum(1 for n in self.nodes if not n.dead and math.isnan(n.done_at)),
            origin_bytes=float(self.net.sent[origin]),
            egress_series=bucket_bytes[:n_buckets],
            upload_series=bucket_up[:n_buckets],
            counters=dict(self.counters),
            wall=time.perf_counter() - wall0,
            sim_time=t,
            costs={k: (int(v[0]), float(v[1])) for k, v in self.costs.items()},
        )
