"""The swarm registry held in memory (pure: no I/O, no clock reads).

Every method that depends on time takes ``now`` (Unix seconds) from its caller: the HTTP
shell passes the wall clock, tests pass literals. Randomness comes from an injectable
``random.Random``. The rows of the peer and blob tables, and the admin views read from
them, are in ``tracker.holders``; piece hashes, tags and leases in ``tracker.records``.

Invariants (checked by the tests):

1. A peer id appears in a blob's ``complete`` or ``partial`` set iff that blob's digest is
   in the peer's ``held`` tuple or ``partial`` map; a blob with no holder is dropped.
2. ``_holdings`` is the total number of (peer, blob) entries and never exceeds
   ``policy.max_holdings``; ``_peers`` never exceeds ``policy.max_peers``.
3. ``_peers`` is ordered by last announce (oldest first), so :meth:`sweep` removes expired
   peers in time proportional to how many expired.
4. An expired peer is never handed out, even before a sweep removes it.
"""

from __future__ import annotations

import random
from typing import Final

from tracker import protocol as p
from tracker.errors import PeerBanned, PeerConflict, RegistryFull, TooManyRequests
from tracker.holders import (
    BlobHolders,
    PeerState,
    blob_detail,
    blob_views,
    peer_view,
    transfer_views,
)
from tracker.model import (
    BlobDetail,
    BlobView,
    PeerView,
    Policy,
    Stats,
    TransferView,
    rank,
    tier_of,
)
from tracker.records import Records

#: Upper bound on ``limit`` for the admin listings (one page).
MAX_PAGE: Final = 10_000
#: Holders one lookup examines at most (a uniform random sample when there are more): twice
#: the largest ``limit``, so a full answer is found even when half the sample is busy, and
#: a lookup costs the same for a blob on 100 nodes or on 10,000.
LOOKUP_SAMPLE: Final = 2 * p.MAX_LOOKUP_LIMIT


class Registry:
    """Who holds which blob, plus piece hashes, tag resolutions and origin leases.

    Args:
        policy: Timing and caps.
        rng: Randomness for lookup sampling.
    """

    def __init__(self, policy: Policy | None = None, *, rng: random.Random | None = None) -> None:
        self.policy = policy or Policy()
        self._rng = rng or random.Random()
        self._peers: dict[str, PeerState] = {}
        self._blobs: dict[str, BlobHolders] = {}
        self._bans: dict[str, float] = {}
        self._holdings = 0
        self.records = Records(self.policy)

    # --- peer protocol ------------------------------------------------------------------

    def announce(self, a: p.Announce, now: float) -> p.AnnounceReply:
        """Record a peer's full state.

        Raises:
            PeerBanned: An operator banned this peer id.
            PeerConflict: The id is live under another session.
            TooManyRequests: The same session announced less than the minimum gap ago.
            RegistryFull: Too many peers or holdings; nothing was changed.
        """
        self._check_ban(a.peer_id, now)
        peer = self._live(a.peer_id, now)
        if peer is not None:
            if peer.session != a.session:
                raise PeerConflict(f"peer id {a.peer_id!r} is live under another session")
            wait = peer.last_seen + self.policy.min_announce_gap - now
            if wait > 0:
                raise TooManyRequests("announce again later", retry_after=wait)
        elif len(self._peers) >= self.policy.max_peers:
            self.sweep(now)
            if len(self._peers) >= self.policy.max_peers:
                raise RegistryFull(f"{len(self._peers)} live peers")
        held = {b.digest: b.size for b in a.held}
        partial = {b.digest: b for b in a.in_progress if b.digest not in held}
        before = 0 if peer is None else len(peer.held) + len(peer.partial)
        if self._holdings - before + len(held) + len(partial) > self.policy.max_holdings:
            raise RegistryFull(f"{self._holdings} holdings")
        if peer is None:
            peer = PeerState(a.peer_id, a.session)
        else:
            del self._peers[peer.peer_id]  # re-inserted below: keeps last-seen order
        self._relink(peer, held, partial)
        peer.host, peer.port = a.host, a.port
        peer.upload_slots, peer.load = a.upload_slots, a.load
        peer.bytes_served = a.bytes_served
        peer.bytes_from_origin = a.bytes_from_origin
        peer.bytes_from_peers = a.bytes_from_peers
        peer.last_seen = now
        self._peers[peer.peer_id] = peer
        return p.AnnounceReply(
            interval=self.policy.announce_interval,
            peer_ttl=self.policy.peer_ttl,
            draining=peer.draining,
        )

    def leave(self, msg: p.Leave, now: float) -> None:
        """Forget a peer now. Unknown or expired ids are fine (leave is idempotent).

        Raises:
            PeerConflict: The id is live under another session.
        """
        peer = self._live(msg.peer_id, now)
        if peer is None:
            return
        if peer.session != msg.session:
            raise PeerConflict(f"peer id {msg.peer_id!r} is live under another session")
        self._remove(peer)

    def lookup(self, q: p.Lookup, now: float) -> p.LookupReply:
        """Rank live holders of ``q.digest`` (see ``tracker.model``); never the asker.

        At most ``LOOKUP_SAMPLE`` holders, drawn at random, are examined.
        """
        blob = self._blobs.get(q.digest)
        if blob is None:
            return p.LookupReply(digest=q.digest, size=0)
        deadline = now - self.policy.peer_ttl
        peers, uniform = self._peers, self._rng.random
        pool = [*blob.complete, *blob.partial]
        n = len(pool)
        candidates: list[tuple[int, tuple[PeerState, bool]]] = []
        best = 0
        # Examine holders in random order (a lazy Fisher-Yates shuffle) and stop after
        # LOOKUP_SAMPLE of them, or once `limit` tier-0 holders are found: the cost of a
        # lookup is bounded whatever the swarm size, and the sample is still uniform.
        for i in range(min(n, LOOKUP_SAMPLE)):
            if best >= q.limit:
                break
            j = i + int(uniform() * (n - i))  # randrange(i, n) without its Python overhead
            pool[i], pool[j] = pool[j], pool[i]
            peer_id = pool[i]
            peer = peers[peer_id]
            if peer_id == q.peer_id or peer.draining or peer.last_seen <= deadline:
                continue
            complete = peer_id in blob.complete
            tier = tier_of(complete=complete, load=peer.load, upload_slots=peer.upload_slots)
            best += tier == 0
            candidates.append((tier, (peer, complete)))
        chosen = rank(candidates, limit=q.limit, rng=self._rng)
        return p.LookupReply(
            digest=blob.digest,
            size=blob.size,
            peers=tuple(
                p.PeerAddr(
                    peer_id=peer.peer_id,
                    host=peer.host,
                    port=peer.port,
                    complete=complete,
                    bytes_held=blob.size if complete else peer.partial[blob.digest],
                    load=peer.load,
                    upload_slots=peer.upload_slots,
                )
                for peer, complete in chosen
            ),
        )

    def lease(self, req: p.LeaseRequest, now: float) -> p.LeaseReply:
        """Grant, renew, release or refuse an origin-fetch lease or run (``Records.lease``).

        A dead holder's lease of ``piece_index`` is dropped first; a run extension drops
        and takes a dead holder's lease of any later piece too (liveness is passed to
        ``Records.lease`` as ``alive``): it stops only at the asker's or a live peer's lease.
        A new lease of a recorded piece is refused (``capped``) while a live, not draining
        peer other than the asker holds the blob complete, unless ``req.insist``: the
        holder named is the smallest such peer id (``seeder``; see ``tracker.leases``).

        Raises:
            PeerConflict: The asker's id is live under another session.
            RegistryFull: Too many live leases.
        """
        peer = self._live(req.peer_id, now)
        if peer is not None and peer.session != req.session:
            raise PeerConflict(f"peer id {req.peer_id!r} is live under another session")
        holder = self.records.lease_holder(req.digest, req.piece_index, now)
        if holder is not None and holder != req.peer_id and self._live(holder, now) is None:
            # its holder left or expired: nobody is fetching the piece any more
            self.records.drop_lease(req.digest, req.piece_index)

        def alive(peer_id: str) -> bool:
            return self._live(peer_id, now) is not None

        def seeder() -> str | None:
            blob = self._blobs.get(req.digest)
            if blob is None:
                return None
            deadline, peers = now - self.policy.peer_ttl, self._peers
            return min(
                (
                    i
                    for i in blob.complete
                    if i != req.peer_id and not peers[i].draining and peers[i].last_seen > deadline
                ),
                default=None,
            )

        return self.records.lease(req, now, alive, seeder)

    # --- admin --------------------------------------------------------------------------

    def peers(self, now: float, *, offset: int = 0, limit: int = MAX_PAGE) -> list[PeerView]:
        """Live peers sorted by id, one page."""
        self.sweep(now)
        ids = sorted(self._peers)[offset : offset + limit]
        return [peer_view(self._peers[i], self.policy.peer_ttl) for i in ids]

    def blobs(self, now: float, *, offset: int = 0, limit: int = MAX_PAGE) -> list[BlobView]:
        """Blobs with live holders sorted by digest, one page."""
        self.sweep(now)
        return blob_views(self._blobs, offset, limit)

    def blob(self, digest: str, now: float) -> BlobDetail | None:
        """One blob and its live holders, or None if no live peer holds it."""
        self.sweep(now)
        blob = self._blobs.get(digest)
        return None if blob is None else blob_detail(blob, self._peers)

    def transfers(self, now: float, *, limit: int = MAX_PAGE) -> list[TransferView]:
        """Downloads in progress on live peers, most recently announced first."""
        self.sweep(now)
        return transfer_views(self._peers, self._blobs, limit)

    def drain(self, peer_id: str, now: float) -> bool:
        """Stop handing out a live peer and tell it to drain; False if it is unknown."""
        peer = self._live(peer_id, now)
        if peer is None:
            return False
        peer.draining = True
        return True

    def ban(self, peer_id: str, now: float) -> None:
        """Forget a peer and refuse its announces for ``policy.ban_seconds``."""
        self._bans[peer_id] = now + self.policy.ban_seconds
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._remove(peer)

    def forget(self, digest: str) -> bool:
        """Drop a blob, its holders, piece hashes and tags; False if nothing was known.

        Peers that still hold it list it again in their next announce.
        """
        blob = self._blobs.pop(digest, None)
        for peer_id in () if blob is None else blob.complete:
            peer = self._peers[peer_id]
            peer.held = tuple(d for d in peer.held if d != digest)
        for peer_id in () if blob is None else blob.partial:
            del self._peers[peer_id].partial[digest]
        if blob is not None:
            self._holdings -= len(blob.complete) + len(blob.partial)
        dropped = self.records.forget(digest)
        return blob is not None or dropped

    def stats(self, now: float) -> Stats:
        """Totals over live peers and records."""
        self.sweep(now)
        peers = self._peers.values()
        return Stats(
            peers=len(self._peers),
            blobs=len(self._blobs),
            holdings=self._holdings,
            in_progress=sum(len(x.partial) for x in peers),
            bytes_served=sum(x.bytes_served for x in peers),
            bytes_from_origin=sum(x.bytes_from_origin for x in peers),
            bytes_from_peers=sum(x.bytes_from_peers for x in peers),
            piece_records=self.records.piece_count,
            tag_records=self.records.tag_count,
            leases=self.records.lease_count,
        )

    def sweep(self, now: float) -> int:
        """Remove expired peers, bans and leases; return how many peers expired."""
        deadline = now - self.policy.peer_ttl
        expired = 0
        while self._peers:
            oldest = next(iter(self._peers.values()))
            if oldest.last_seen > deadline:
                break
            self._remove(oldest)
            expired += 1
        for peer_id in [i for i, until in self._bans.items() if until <= now]:
            del self._bans[peer_id]
        self.records.sweep(now)
        return expired

    # --- internals ----------------------------------------------------------------------

    def _check_ban(self, peer_id: str, now: float) -> None:
        until = self._bans.get(peer_id)
        if until is not None:
            if until > now:
                raise PeerBanned(f"peer id {peer_id!r} is banned")
            del self._bans[peer_id]

    def _live(self, peer_id: str, now: float) -> PeerState | None:
        peer = self._peers.get(peer_id)
        if peer is not None and peer.last_seen <= now - self.policy.peer_ttl:
            self._remove(peer)
            return None
        return peer

    def _blob(self, digest: str, size: int) -> BlobHolders:
        blob = self._blobs.get(digest)
        if blob is None:
            blob = self._blobs[digest] = BlobHolders(digest, size)
        return blob

    def _relink(
        self, peer: PeerState, held: dict[str, int], partial: dict[str, p.BlobInProgress]
    ) -> None:
        """Make the holder sets match ``peer``'s new state, touching only what changed.

        A re-announce usually lists the same blobs (a cluster's steady state), so the
        set differences are empty and this costs a few set operations, not one per blob.
        """
        peer_id, blobs = peer.peer_id, self._blobs
        old_held = set(peer.held)
        if old_held != held.keys():
            for digest in old_held - held.keys():
                self._drop(digest, peer_id, complete=True)
            for digest in held.keys() - old_held:
                self._blob(digest, held[digest]).complete.add(peer_id)
            peer.held = tuple(blobs[d].digest for d in held)
        old_partial = peer.partial
        for digest in old_partial.keys() - partial.keys():
            self._drop(digest, peer_id, complete=False)
        new_partial: dict[str, int] = {}
        for b in partial.values():
            blob = self._blob(b.digest, b.size)
            if b.digest not in old_partial:
                blob.partial.add(peer_id)
            new_partial[blob.digest] = b.bytes_held
        peer.partial = new_partial
        self._holdings += len(peer.held) + len(new_partial) - len(old_held) - len(old_partial)

    def _drop(self, digest: str, peer_id: str, *, complete: bool) -> None:
        blob = self._blobs[digest]
        (blob.complete if complete else blob.partial).discard(peer_id)
        if not blob.complete and not blob.partial:
            del self._blobs[digest]

    def _unlink(self, peer: PeerState) -> None:
        """Remove ``peer`` from every blob's holder sets (it stays in ``_peers``)."""
        for digest in peer.held:
            self._drop(digest, peer.peer_id, complete=True)
        for digest in peer.partial:
            self._drop(digest, peer.peer_id, complete=False)
        self._holdings -= len(peer.held) + len(peer.partial)
        peer.held, peer.partial = (), {}

    def _remove(self, peer: PeerState) -> None:
        self._unlink(peer)
        del self._peers[peer.peer_id]
