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

import heapq
import math
import time
from typing import Any

import numpy as np

from bench.sim.config import (
    BEFORE,
    BEFORE_COMMIT,
    FIRST_CUT,
    MAX_LINKS_PER_BLOB,
    SHIPPED,
    VERSIONS,
    Config,
    Result,
    capacities,
    fetch_config,
    lower_bound,
)
from bench.sim.nodes import NodeSide
from peer.mesh.fetch import TICK

__all__ = [
    "BEFORE",
    "BEFORE_COMMIT",
    "FIRST_CUT",
    "MAX_LINKS_PER_BLOB",
    "SHIPPED",
    "VERSIONS",
    "Config",
    "Result",
    "Simulation",
    "capacities",
    "fetch_config",
    "lower_bound",
]


class Simulation(NodeSide):
    """One run of :class:`Config`; call :meth:`run`.

    The model's parts, each a layer on top of the one before: the run's state
    (:mod:`bench.sim.state`), the tracker side (:mod:`bench.sim.tracking`), links and peer
    requests (:mod:`bench.sim.peering`), origin requests (:mod:`bench.sim.origin`) and the
    nodes (:mod:`bench.sim.nodes`); this class adds the event loop.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        for node in self.nodes:
            self._push(node.arrival, "arrive", node.id)
            self._announce(node, min(0.0, node.arrival) - 1.0)  # the node's service start

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
