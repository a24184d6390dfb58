"""The node side of the model: a node's arrival, completion and departure, its plans
(``next_requests``), and what happens to its requests (delivered, cancelled, timed out)."""

from __future__ import annotations

import math
import time

from bench.sim.config import EPOCH, MAX_LINKS_PER_BLOB, fetch_config, lower_bound
from bench.sim.origin import OriginSide
from bench.sim.state import _Node, _Req
from peer.mesh.fetch import HASH_REFRESH
from peer.mesh.pieces import Bitfield
from peer.mesh.scheduler import Origin, PieceScheduler
from tracker import protocol as p


class NodeSide(OriginSide):
    """Node lifecycle, plans and deliveries (on :class:`OriginSide`)."""

    # -- node lifecycle ------------------------------------------------------------------
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
