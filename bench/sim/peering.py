"""The peer side of the model: links between nodes (found by lookups, capped as
``Swarm`` caps them) and the requests a node sends its peers."""

from __future__ import annotations

import math

from bench.sim.config import MAX_LINKS_PER_BLOB
from bench.sim.state import _Node, _Req
from bench.sim.tracking import TrackerSide
from peer.mesh.fetch import LOOKUP_INTERVAL, LOOKUP_INTERVAL_MAX, PEER_PIECE_TIMEOUT
from peer.mesh.pieces import Bitfield


class PeerSide(TrackerSide):
    """Links and requests to peers (on :class:`TrackerSide`)."""

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

    # -- requests ------------------------------------------------------------------------
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
