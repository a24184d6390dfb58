"""Origin-fetch leases held in memory (pure): who fetches which pieces from the origin.

The lease tables of :class:`tracker.records.Records`, which inherits :class:`Leases` and
adds the piece hashes and tag resolutions; the leases read those (a run stops at a
record's piece count; a recorded piece may be refused while a peer seeds the blob) but
never write them, and each put is passed to :meth:`Leases._fetched`. The Redis twin is
``tracker.redis_lease``. A new lease past ``Policy.max_leases`` is refused after sweeping.

Leases. One lease per ``(digest, piece_index)``: the first peer to ask gets it for
``ttl`` seconds, renews it by asking again, and releases it with ``ttl == 0``; while it
is live every other asker gets ``granted=False`` with the holder and the expiry (a soft
piece's expiry reads as now: see below), and should fetch that range from the holder (or
wait) rather than from the origin. On top of that, at most ``Policy.max_origin_fetches``
leases of one digest are live at once (the cluster's origin fetches of that blob in
flight): a new lease past the cap is refused with ``capped=True``, naming the holder of
the blob's lease that expires first; renewals and releases are never capped. The asker
should pause the origin for that blob briefly and take pieces from peers (see
``peer.mesh.fetch``). A holder that records a piece's hash has finished its fetch: the
lease stops counting against the cap at once (a run's entry moves on to the rest of the
run: see below), but still refuses the piece to others until it expires (they should get
it from the holder, which has it now; a full release would invite a second origin fetch
of the same range). A lease whose holder is no longer a live peer (it left, or expired)
refuses nobody: the registry drops it before the next asker is answered
(``Registry.lease``); nor does its cap entry count against the cap (nobody is fetching
that piece any more: ``alive``, below), though it stays until it expires or is dropped.

Runs. A request may ask for ``count`` consecutive pieces ``[piece_index, piece_index +
count)`` (at most ``MAX_LEASE_RUN``), so that a node alone fetching a blob pays one lease
and one range request for many pieces. A refusal (held or capped) is decided by
``piece_index`` alone and covers it alone. A release releases each piece of the run whose
lease the asker holds (others' are untouched), cap entries included. A renewal renews
``piece_index`` and each following piece of the run while its live lease is the asker's
and nobody wants it (see below), stopping at the first that is not; it refreshes the cap
entries it finds (a run's moved entry included) but never makes one. A new grant takes
``piece_index`` as a single lease does (cap check, lease, cap entry); then, if ``count >
1`` and the blob is solo (not contended for the asker, see below, and no live cap entry,
i.e. no unrecorded origin fetch in flight, held by another peer that is live: a departed
holder's entry does not count), it extends over each next piece
while nobody holds a live lease of it (within the blob's piece record's piece count if
there is a record, and ``MAX_PIECES``) and ``max_leases`` leaves room (a run is
shortened, never refused, for room). A recorded hash does not stop a run: hashes outlive
the nodes that fetched the blob, so a node re-fetching it alone later gets full runs,
while a piece fetched recently is still covered by its fetcher's live lease (a lease
outlives the record of its piece until it expires), which does stop a run while its
holder is a live peer. A lease whose holder is not (``alive``, passed by
``Registry.lease``) is free to a run: the run drops it (cap entry and marks too, as
:meth:`Leases.drop_lease`) and takes the piece, as the registry does for
``piece_index``; so a node that pulled a blob and left (its leases guard its pieces until
they expire) does not cut the next lone puller to single pieces. The asker's own live
leases always stop a run. Extended pieces are leased to the asker until the same expiry
(soft: see below), but get no cap entry of their own: a run counts once against
``max_origin_fetches``, by its first unrecorded piece, until its last piece is recorded.
Its entry starts on its first piece; when the holder records the piece that has it, the
entry moves on past the holder's pieces that same put records to the next piece, if that
one is a soft lease of the holder's (with that lease's expiry), and goes otherwise (the
run is done, cut or released). Releasing the piece that has the entry drops it, as for
any lease. The reply's ``count`` is the run's length (the request's ``count`` for a
release, 1 for a refusal).

Soft pieces. A run's extended pieces (not its first) are *soft*: preemptible, so that a
node alone streams a long run while a crowd arriving cuts it short, without a piece being
fetched twice. A new lease (``ttl > 0``) asked by another peer for a live soft piece is
refused for now: ``granted=False`` with the holder and ``expires_at = now`` (the asker
backs off briefly and asks again), and the piece is marked *wanted*. If the blob is at its
cap, the capped refusal is returned instead and nothing is marked (the asker could not
fetch the piece from the origin anyway; cutting the holder's stream would only slow the
blob). The holder's next renewal stops at the first wanted piece of the range (the reply's
``count`` tells it where to cut its run; its first piece is renewed regardless, so
``count`` is never 0); the wanted piece and the rest after the cut keep their leases and
marks, unrenewed, until the holder releases them (it releases the pieces it did not
receive, at once), they expire, or the holder records their hashes: a recorded piece is
hard and no longer wanted (its bytes are fetched once, then from the holder by peers;
another peer's record of it does not count). Once released, the next asker gets the piece
normally (cap rules apply). Renewals keep soft pieces soft; releases, expiry, sweeps and
:meth:`Leases.drop_lease` forget both marks with the lease. Run heads, single leases and
recorded pieces are never soft and are refused with their real expiry, as is a release
(``ttl == 0``) by another peer of any piece.

Pieces a complete node holds. A new lease (``ttl > 0``, not the asker's renewal nor a
release) of a piece whose hash is recorded in the blob's piece record is refused while a
live, not draining peer other than the asker holds the blob complete (``seeder``, passed
by ``Registry.lease``): ``granted=False, capped=True``, ``holder`` the smallest such peer
id, ``expires_at = now``, count 1. The asker pauses the origin for the blob, as when
capped, and takes the piece from peers; without this, late arrivals leased pieces from
the origin again once the first fetchers' leases expired (the simulator's 1,000-node
crowd arriving over 60 s: origin egress 3.76× the blob, 1.05× with the refusal). It is
checked after the held and soft refusals and before the cap, does not mark the blob
contended (no origin fetch is in flight for it) and is skipped when the request sets
``insist`` (the asker cannot get the piece from the peers named: it banned them, or
cannot reach them). An unrecorded piece is never refused for it.

Contended blobs. Whenever a new lease (``ttl > 0``) of a blob is refused to a peer — held
by another peer, a soft piece refused for now, or capped — the blob is marked *contended*
by that peer until ``now + req.ttl`` (its lease TTL; a later end already marked for that
peer is kept). A blob is contended for an asker while some live peer other than the asker
(``alive``, as for departed holders above) has an unexpired mark (``now < until``); then
the asker gets no run of it: a new grant covers ``piece_index`` alone (``count`` 1). So a
node alone streams long runs, and once a crowd shows up everybody fetches single pieces
under the cap; without this, the crowd backing off after its refusals holds no cap
entries, so the holder of a cut run looks solo again and gets another long run. The
asker's own refusals do not count (they used to): a lone node is never refused by its own
leases, so its refusals came from other peers, whose live fetches or own refusals already
keep it from a run while they are around; in a crowd the others' marks contend anyway.
Marks of departed peers do not count either: a node refused by another node's guard
leases, both since gone, no longer cuts the next lone puller to single pieces. Only
refusals contend: not a grant while another peer's lease of the blob is live, and not a
release (``ttl == 0``), refused or not. Renewals and releases are unaffected. Contended
marks (``Leases._contended``, digest -> refused peer -> until) are swept like leases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tracker import protocol as p
from tracker.errors import RegistryFull
from tracker.model import Policy


class Leases:
    """The lease tables; see the module docstring.

    Args:
        policy: Caps (``max_leases``, ``max_origin_fetches``).
        piece_records: The piece records by digest (read, never written here).
    """

    def __init__(self, policy: Policy, piece_records: Mapping[str, p.PieceHashes]) -> None:
        self._policy = policy
        self._piece_records = piece_records
        self._leases: dict[tuple[str, int], tuple[str, float]] = {}
        self._blob_leases: dict[str, dict[int, float]] = {}  # digest -> index -> expiry
        self._soft: dict[str, set[int]] = {}  # digest -> indexes of soft (extension) leases
        self._wanted: dict[str, set[int]] = {}  # digest -> soft indexes another peer asked for
        # digest -> refused peer -> end of its last refusal's TTL
        self._contended: dict[str, dict[str, float]] = {}

    @property
    def lease_count(self) -> int:
        """Number of leases (live, or expired and not yet swept)."""
        return len(self._leases)

    def lease(
        self,
        req: p.LeaseRequest,
        now: float,
        alive: Callable[[str], bool] | None = None,
        seeder: Callable[[], str | None] | None = None,
    ) -> p.LeaseReply:
        """Grant, renew, release or refuse a lease or a run (see the module docstring).

        Args:
            req: The request.
            now: The current time.
            alive: Whether a peer id is a live peer: a run extension drops (and takes) a
                live lease whose holder is not, and neither its cap entries (for the cap
                and for solo) nor its contended marks count. None: everyone is alive (the
                registry drops a dead holder's lease of ``piece_index`` itself, before
                this).
            seeder: The smallest id of a live, not draining peer other than the asker
                that holds the blob complete, or None (called only when needed: a new
                lease of a recorded piece without ``insist``). None: nobody does.

        Raises:
            RegistryFull: ``max_leases`` live leases exist and this one is new.
        """
        digest, first, peer = req.digest, req.piece_index, req.peer_id
        key = (digest, first)
        current = self._leases.get(key)
        live = current is not None and current[1] > now
        soft = self._soft.get(digest, set())
        if live and current is not None and current[0] != peer:
            if req.ttl == 0:
                return p.LeaseReply(granted=False, holder=current[0], expires_at=current[1])
            self._contend(digest, peer, now + req.ttl)  # a refusal: no runs for others
            if first not in soft:
                return p.LeaseReply(granted=False, holder=current[0], expires_at=current[1])
            # A soft piece: refused for now, and its holder asked to stop its run there
            # (not while the blob is capped: the asker could not fetch it anyway).
            if (refusal := self._capped(digest, peer, now, alive)) is not None:
                return refusal
            self._wanted.setdefault(digest, set()).add(first)
            return p.LeaseReply(granted=False, holder=current[0], expires_at=now)
        blob = self._blob_leases.get(digest, {})
        if req.ttl == 0:
            for index in range(first, first + req.count):
                held = self._leases.get((digest, index))
                if index == first or (held is not None and held[0] == peer):
                    self._leases.pop((digest, index), None)
                    blob.pop(index, None)
                    self._unmark(digest, index)
            return p.LeaseReply(granted=True, holder=peer, expires_at=now, count=req.count)
        if not live and (refusal := self._seeded(req, now, seeder)) is not None:
            return refusal  # not a contention: no origin fetch of it is in flight
        if not live and (refusal := self._capped(digest, peer, now, alive)) is not None:
            self._contend(digest, peer, now + req.ttl)
            return refusal
        if current is None and len(self._leases) >= self._policy.max_leases:
            self.sweep(now)
            if len(self._leases) >= self._policy.max_leases:
                raise RegistryFull(f"{len(self._leases)} live leases")
        expires_at = now + req.ttl
        self._leases[key] = (peer, expires_at)
        if not live:
            self._blob_leases.setdefault(digest, {})[first] = expires_at
            self._unmark(digest, first)  # a new grant's first piece is hard
        elif first in blob:  # a renewal refreshes a cap entry, never makes one
            blob[first] = expires_at
        end = min(first + req.count, p.MAX_PIECES)
        if live:
            count = self._renew_run(req, end, expires_at, now)
        elif end > first + 1 and self._solo(digest, peer, now, alive):
            count = self._extend_run(req, end, expires_at, now, alive)
        else:
            count = 1
        return p.LeaseReply(granted=True, holder=peer, expires_at=expires_at, count=count)

    def _seeded(
        self, req: p.LeaseRequest, now: float, seeder: Callable[[], str | None] | None
    ) -> p.LeaseReply | None:
        """The refusal of a new lease of a recorded piece while another live peer holds
        the blob complete (``seeder``), unless the asker insists; None otherwise."""
        if req.insist or seeder is None:
            return None
        record = self._piece_records.get(req.digest)
        index = req.piece_index
        if record is None or index >= len(record.hashes) or not record.hashes[index]:
            return None
        holder = seeder()
        if holder is None:
            return None
        return p.LeaseReply(granted=False, holder=holder, expires_at=now, capped=True)

    def _renew_run(self, req: p.LeaseRequest, end: int, expires_at: float, now: float) -> int:
        """Renew the asker's live leases after ``piece_index`` up to the first that is not
        or that another peer wants (the cut: the holder stops its run there)."""
        blob = self._blob_leases.get(req.digest, {})
        wanted = self._wanted.get(req.digest, set())
        index = req.piece_index + 1
        while index < end:
            held = self._leases.get((req.digest, index))
            if held is None or held[1] <= now or held[0] != req.peer_id or index in wanted:
                break
            self._leases[(req.digest, index)] = (req.peer_id, expires_at)
            if index in blob:  # a piece granted on its own keeps counting against the cap
                blob[index] = expires_at
            index += 1
        return index - req.piece_index

    def _contend(self, digest: str, peer: str, until: float) -> None:
        """A lease of ``digest`` was refused to ``peer``: no runs of it for other peers
        until ``until`` (or later) while ``peer`` is live."""
        marks = self._contended.setdefault(digest, {})
        marks[peer] = max(marks.get(peer, until), until)

    def _solo(
        self, digest: str, peer: str, now: float, alive: Callable[[str], bool] | None
    ) -> bool:
        """No live peer but ``peer`` was refused a lease of ``digest`` lately (contended),
        or holds an unrecorded origin fetch of it in flight (a live cap entry)."""

        def other(holder: str) -> bool:
            """``holder`` is a live peer other than the asker."""
            return holder != peer and (alive is None or alive(holder))

        for refused, until in self._contended.get(digest, {}).items():
            if until > now and other(refused):
                return False
        for index, until in self._blob_leases.get(digest, {}).items():
            if until > now:
                held = self._leases.get((digest, index))
                if held is None or other(held[0]):
                    return False
        return True

    def _extend_run(
        self,
        req: p.LeaseRequest,
        end: int,
        expires_at: float,
        now: float,
        alive: Callable[[str], bool] | None,
    ) -> int:
        """Lease the free pieces after a new grant's ``piece_index`` (within its record);
        a live lease of a holder that is not ``alive`` (never the asker) is free: dropped."""
        digest = req.digest
        record = self._piece_records.get(digest)
        if record is not None:
            end = min(end, len(record.hashes))
        blob = self._blob_leases[digest]
        soft = self._soft.setdefault(digest, set())
        index = req.piece_index + 1
        while index < end:
            held = self._leases.get((digest, index))
            if held is not None and held[1] > now:
                if held[0] == req.peer_id or alive is None or alive(held[0]):
                    break
                self.drop_lease(digest, index)  # its holder is gone: nobody fetches it
                held = None
            if held is None and len(self._leases) >= self._policy.max_leases:
                break
            self._leases[(digest, index)] = (req.peer_id, expires_at)
            blob.pop(index, None)  # a stale cap entry of an expired lease
            self._wanted.get(digest, set()).discard(index)  # a stale mark of one
            soft.add(index)
            index += 1
        if not soft:
            del self._soft[digest]
        return index - req.piece_index

    def lease_holder(self, digest: str, index: int, now: float) -> str | None:
        """The holder of the live lease of piece ``index`` of ``digest``, if any."""
        current = self._leases.get((digest, index))
        return current[0] if current is not None and current[1] > now else None

    def drop_lease(self, digest: str, index: int) -> None:
        """Forget the lease of piece ``index`` of ``digest`` (its holder is gone)."""
        self._leases.pop((digest, index), None)
        self._blob_leases.get(digest, {}).pop(index, None)
        self._unmark(digest, index)

    def _unmark(self, digest: str, index: int) -> None:
        """Piece ``index`` of ``digest`` is neither soft nor wanted any more."""
        self._soft.get(digest, set()).discard(index)
        self._wanted.get(digest, set()).discard(index)

    def _fetched(self, record: p.PieceHashes) -> None:
        """Leases of the pieces ``record``'s writer recorded stop counting against the cap,
        and stop being soft (and wanted); a run's cap entry moves on to its first piece
        this put did not record."""
        digest, hashes, writer = record.digest, record.hashes, record.peer_id

        def recorded(index: int) -> bool:
            """The put records piece ``index``, and the writer leases it."""
            held = self._leases.get((digest, index))  # None once swept
            recorded_here = index < len(hashes) and bool(hashes[index])
            return recorded_here and held is not None and held[0] == writer

        blob = self._blob_leases.get(digest, {})
        soft = self._soft.get(digest, set())
        for index in [i for i in blob if recorded(i)]:
            del blob[index]
            # The rest of its run is still in flight: it counts by its first unrecorded
            # piece (the writer's pieces this put records are passed over).
            after = index + 1
            while recorded(after):
                after += 1
            held = self._leases.get((digest, after))
            if after in soft and held is not None and held[0] == writer:
                blob[after] = held[1]
        for index in [i for i in soft if recorded(i)]:
            self._unmark(digest, index)

    def _capped(
        self, digest: str, peer: str, now: float, alive: Callable[[str], bool] | None
    ) -> p.LeaseReply | None:
        """The refusal of a new lease of ``digest`` by ``peer`` if its live cap entries
        held by the asker or a live peer are at the cap (a departed holder's do not count:
        nobody is fetching them)."""
        cap = self._policy.max_origin_fetches
        blob = self._blob_leases.get(digest)
        if cap <= 0 or blob is None:
            return None
        for index in [i for i, until in blob.items() if until <= now]:
            del blob[index]

        def counts(index: int) -> bool:
            held = self._leases.get((digest, index))
            return held is None or held[0] == peer or alive is None or alive(held[0])

        entries = [(until, str(index), index) for index, until in blob.items() if counts(index)]
        if len(entries) < cap:
            return None
        # Ties broken like Redis's zset (by the index as a string), so both stores agree.
        until, _, first = min(entries)
        holder = self._leases[(digest, first)][0]
        return p.LeaseReply(granted=False, holder=holder, expires_at=until, capped=True)

    def sweep(self, now: float) -> None:
        """Drop expired leases (and contended marks)."""
        for digest, refused in list(self._contended.items()):
            for peer in [k for k, until in refused.items() if until <= now]:
                del refused[peer]
            if not refused:
                del self._contended[digest]
        for key in [k for k, (_, until) in self._leases.items() if until <= now]:
            del self._leases[key]
            self._unmark(*key)
        for marks in (self._soft, self._wanted):
            for digest in [d for d, indexes in marks.items() if not indexes]:
                del marks[digest]
        for digest in [
            d for d, b in self._blob_leases.items() if max(b.values(), default=0) <= now
        ]:
            del self._blob_leases[digest]
