"""The simulator's state: a request in flight (``_Req``), a node (``_Node``) and the run's
state (``SimState``) with the helpers every part of the model uses.

``SimState`` is the base of the model's layers, each on top of the one before:
:mod:`bench.sim.tracking` (announces, lookups, leases), :mod:`bench.sim.peering` (links,
requests to peers), :mod:`bench.sim.origin` (origin requests, runs, lease renewals and
refusals), :mod:`bench.sim.nodes` (arrivals, departures, plans, deliveries) and
``bench.sim.model.Simulation`` (the event loop).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import time
from typing import Any

from bench.sim.config import Config, capacities, fetch_config
from bench.sim.network import Network
from peer.mesh.pieces import Bitfield
from peer.mesh.scheduler import Origin, PieceScheduler
from tracker.model import Policy
from tracker.registry import Registry

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v2 = (v2 + v3) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v3 = _rotl(v3, 16) ^ v2
    v0 = _rotl(v0, 32)
    v2 = (v2 + v1) & _M64
    v0 = (v0 + v3) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v3 = _rotl(v3, 21) ^ v0
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def str_hash0(s: str) -> int:
    """``hash(s)`` as CPython (3.11+, 64-bit) computes it under ``PYTHONHASHSEED=0``:
    SipHash-1-3 with a zero key over the string's code units (1, 2 or 4 bytes each)."""
    if not s:
        return 0
    top = max(map(ord, s))
    codec = "latin-1" if top < 0x100 else "utf-16-le" if top < 0x10000 else "utf-32-le"
    data = s.encode(codec)
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573
    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    x = v0 ^ v1 ^ v2 ^ v3
    x -= (x >> 63) << 64  # as a signed Py_hash_t
    return -2 if x == -1 else x


class PeerId(str):
    """A node's peer id whose hash does not depend on the process's string-hash seed.

    The tracker keeps the holders of a blob in sets of peer ids and a lookup draws from
    them in the sets' order (``Registry.lookup``), so with plain ``str`` ids a run would
    depend on ``PYTHONHASHSEED``. This id hashes as ``str`` does under ``PYTHONHASHSEED=0``
    (which ``bench/simulate.py`` pinned before): a run repeats whatever the process's seed, with the
    results it has under that pin.
    """

    _hash: int

    def __new__(cls, value: str) -> PeerId:
        self = super().__new__(cls, value)
        self._hash = str_hash0(value)
        return self

    def __hash__(self) -> int:
        return self._hash


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
        self.name = PeerId(f"node-{i:05d}")  # (see PeerId)
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


class SimState:
    """The state of one run of :class:`Config` (``bench.sim.model.Simulation`` runs it)."""

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
