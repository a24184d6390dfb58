"""The tracker side of the model: a node's announces and lookups, and the origin-fetch
leases it releases, the piece hashes it records, and the origin coordination the model
stands in for where the tracker lacks it (``Config.lease_cap``)."""

from __future__ import annotations

import math

from bench.sim.config import (
    ANNOUNCE_DEBOUNCE,
    DIGEST,
    EPOCH,
    MAX_REQUESTS,
    MIN_ANNOUNCE_GAP,
)
from bench.sim.state import SimState, _Node, _Req
from tracker import protocol as p
from tracker.model import DEFAULT_ANNOUNCE_INTERVAL


class TrackerSide(SimState):
    """Announces, lookups, lease releases, piece hashes (on :class:`SimState`)."""

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

    # -- leases --------------------------------------------------------------------------
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
