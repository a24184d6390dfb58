"""The tracker protocol's message types and limits (pure data; no I/O, no codec).

Import them from :mod:`tracker.protocol`, which re-exports everything here next to the
msgpack codec; this module exists only to keep each file short. Every type is a frozen,
keyword-only, slotted dataclass; times are Unix seconds as floats chosen by the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

#: Bumped when a field is removed or changes meaning; peers and tracker must agree.
PROTOCOL_VERSION: Final = 1
#: ``Content-Type`` of every ``/v1/*`` body (the name msgpack users send in practice).
MEDIA_TYPE: Final = "application/msgpack"

# Limits. Each bounds what one message may make the tracker hold; see docs/tracker.md.
#: One node's cache of ~200 GB of ~25 MB layers is ~8,000 blobs; one announce at the cap
#: weighs ~650 KB, under MAX_BODY.
MAX_HELD: Final = 8192
#: Blobs a node downloads at once; pullers run a few images × a dozen layers in parallel.
MAX_IN_PROGRESS: Final = 256
#: 16,384 pieces × 4 MiB covers a 64 GiB blob; the hash list then weighs 512 KiB.
MAX_PIECES: Final = 16_384
#: Peers one lookup may return: enough to saturate a link, small enough to spread load.
MAX_LOOKUP_LIMIT: Final = 64
#: Largest body any /v1 route reads (checked before msgpack sees a byte).
MAX_BODY: Final = 1 << 20
#: Largest blob size we accept: 2**53 keeps sizes exact in JSON (admin API) clients.
MAX_SIZE: Final = 1 << 53
#: Piece sizes between 16 KiB and 64 MiB: below wastes hashes, above defeats spreading.
MIN_PIECE_SIZE: Final = 1 << 14
MAX_PIECE_SIZE: Final = 1 << 26
#: Leases are short: long enough for one range fetch, short enough to recover a dead node.
MAX_LEASE_TTL: Final = 300.0
#: Piece ranges per blob a lease can name (same bound as pieces per blob).
MAX_PIECE_INDEX: Final = MAX_PIECES - 1
#: Consecutive pieces one lease may cover (``LeaseRequest.count``): 64 × 4 MiB is one
#: 256 MiB range request, and a run can never tie up more than that of one blob.
MAX_LEASE_RUN: Final = 64
#: Recent errors one announce may carry (a node sends those since its last announce).
MAX_NODE_ERRORS: Final = 16
#: Characters of one reported error message: one log line, not a traceback.
MAX_ERROR_MESSAGE: Final = 300


class BlobHeld(NamedTuple):
    """A blob a peer holds completely.

    A ``NamedTuple`` rather than a frozen dataclass (the rule elsewhere): an announce
    carries up to ``MAX_HELD`` of these and building a tuple costs a fifth of a frozen
    slotted dataclass, which matters at thousands of announces per second.
    """

    digest: str
    size: int


class BlobInProgress(NamedTuple):
    """A blob a peer is downloading, with how many of its bytes it already holds.

    A ``NamedTuple`` for the same reason as :class:`BlobHeld`.
    """

    digest: str
    size: int
    bytes_held: int


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeError:
    """An error a node saw, reported in its next announce for the operator's dashboard.

    ``kind`` is a short snake_case name (``origin``, ``piece_hash``, ``peer_banned``...);
    ``message`` one printable line without credentials (at most ``MAX_ERROR_MESSAGE``
    characters, no control characters); ``at`` the node's wall clock.
    """

    at: float
    kind: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Announce:
    """A peer's full state, sent on start and every ``interval`` (idempotent).

    ``session`` is a random value the peer picks once per process: the tracker binds a live
    peer id to it, so another process cannot take over or evict that id (409).
    ``upload_slots`` is how many uploads the peer serves at once and ``load`` how many it
    serves now; the ``bytes_*`` counters are totals since the peer started. ``errors``
    (optional on the wire, added in a minor revision) lists errors the node saw since its
    last successful announce, oldest first.
    """

    peer_id: str
    session: bytes
    host: str
    port: int
    held: tuple[BlobHeld, ...] = ()
    in_progress: tuple[BlobInProgress, ...] = ()
    upload_slots: int = 0
    load: int = 0
    bytes_served: int = 0
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    errors: tuple[NodeError, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class AnnounceReply:
    """When to announce next, how long the tracker remembers us, and whether to drain."""

    interval: float
    peer_ttl: float
    draining: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Leave:
    """A peer shutting down: forget it now rather than at TTL expiry."""

    peer_id: str
    session: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class Ack:
    """An empty success answer (to ``Leave``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Lookup:
    """Who can serve ``digest``? ``peer_id`` is the asker, never returned to itself."""

    digest: str
    peer_id: str
    limit: int = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerAddr:
    """One peer that can serve (part of) a blob, as a lookup returns it."""

    peer_id: str
    host: str
    port: int
    complete: bool
    bytes_held: int
    load: int = 0
    upload_slots: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LookupReply:
    """Peers ranked best first: complete and idle, then busy, then partial, then saturated.

    ``size`` is 0 when no live peer announced the blob.
    """

    digest: str
    size: int
    peers: tuple[PeerAddr, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class PieceHashes:
    """SHA-256 of the pieces of a blob, recorded by the peers that fetched them from the origin.

    ``hashes`` has one entry per piece (``ceil(size / piece_size)``): a 32-byte SHA-256, or
    ``b""`` while that piece's hash is not known. In a flash crowd several nodes fetch
    different pieces of one blob from the origin, and each records the hashes of its own
    pieces as soon as it has them, so the tracker merges records per piece: an unknown
    entry takes the first hash put for it, and a different hash for a known piece is a
    conflict that changes nothing. A record with another ``size`` or ``piece_size`` than
    the stored one is a conflict as a whole. ``peer_id`` is the record's first writer.
    """

    digest: str
    size: int
    piece_size: int
    hashes: tuple[bytes, ...]
    peer_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PiecesPutReply:
    """Outcome of a piece-hash put (both can be true at once).

    ``stored``: the record was created, or at least one unknown piece got its hash.
    ``conflict``: the put disagreed with the record (another size or piece size, or
    another hash for a piece already known); the disagreeing parts were not stored.
    """

    stored: bool
    conflict: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class PiecesQuery:
    """Ask for the piece hashes of ``digest`` (answered by ``PieceHashes`` or 404)."""

    digest: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TagQuery:
    """The key of a tag resolution: which registry, repository, tag and Accept set.

    ``accept`` is the peer's canonical form of the client's Accept header (media types,
    sorted, comma-joined): the same tag resolves to different manifests per Accept.
    """

    registry: str
    repository: str
    tag: str
    accept: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TagRecord:
    """A tag→digest resolution a peer made against the origin at ``resolved_at``."""

    registry: str
    repository: str
    tag: str
    accept: str
    digest: str
    media_type: str
    size: int
    resolved_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TagPutReply:
    """``stored`` is False when the tracker already had a resolution at least as recent."""

    stored: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseRequest:
    """Ask to be the one node fetching a piece range of ``digest`` from the origin.

    ``piece_index`` names the range (its first piece, in the P2P layer's range units).
    The holder renews by asking again; ``ttl`` 0 releases the lease.

    ``count`` (optional on the wire, added in a minor revision; 1 to ``MAX_LEASE_RUN``)
    asks for a run of consecutive pieces ``[piece_index, piece_index + count)`` under
    one lease, to fetch with one range request. A new grant covers ``piece_index`` as
    ever and extends over the following pieces only while the asker is alone fetching
    the blob from the origin and each next piece is not leased (up to the blob's piece
    count; a recorded hash does not stop it: see ``tracker.leases``); a renewal renews
    the asker's live leases of the run from ``piece_index`` on, and a release releases
    the asker's leases of the run. A tracker that does not know the field grants
    ``piece_index`` alone. A run's pieces after its first are preemptible until the
    holder records their hashes: another peer asking for one is refused for now
    (``expires_at`` is now: ask again soon) and the piece is marked wanted; the holder's
    next renewal stops at the first wanted piece, and once the holder releases it the
    next asker gets it.

    ``insist`` (optional on the wire, added in a minor revision; sent only when true): the
    asker cannot get the piece from the peers the tracker names (it banned them, or cannot
    reach them): fetch it from the origin anyway. Without it, a new lease of a piece whose
    hash is recorded is refused while a live peer other than the asker holds the blob
    complete (``LeaseReply.capped``, naming that peer: take the piece from peers); with
    it, that refusal is skipped and the other rules (held, soft, cap) apply as ever. A
    tracker that does not know the field never refuses for a complete holder.
    """

    digest: str
    piece_index: int
    peer_id: str
    session: bytes
    ttl: float
    count: int = 1
    insist: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseReply:
    """``granted`` to the asker, or held by ``holder`` until ``expires_at`` (Unix seconds).

    ``capped`` (optional on the wire, added in a minor revision): refused because the
    blob already has the tracker's cap of origin fetches in flight; ``holder`` and
    ``expires_at`` then name the blob's lease that ends first. Also set when a new lease
    of a piece whose hash is recorded is refused because a live peer other than the asker
    holds the blob complete (unless the request sets ``insist``): ``holder`` is then that
    peer (the smallest such peer id) and ``expires_at`` now; the node pauses the origin for
    the blob and takes its pieces from peers, as for the cap. A peer that does not know
    the field sees an ordinary refusal of that piece.

    ``count`` (optional on the wire, added in a minor revision): on a grant or renewal the
    lease covers pieces ``[piece_index, piece_index + count)``, which may be fewer than
    asked (never 0); on a release it echoes the request's ``count``; on a refusal it is 1.
    A reply without it covers ``piece_index`` alone. A renewal's ``count`` tells the holder
    where to cut its run (another peer wants the next piece: stop fetching there, record
    the pieces received and release the rest).
    """

    granted: bool
    holder: str
    expires_at: float
    capped: bool = False
    count: int = 1


Message = (
    Announce
    | AnnounceReply
    | Leave
    | Ack
    | Lookup
    | LookupReply
    | PieceHashes
    | PiecesPutReply
    | PiecesQuery
    | TagQuery
    | TagRecord
    | TagPutReply
    | LeaseRequest
    | LeaseReply
)
M = TypeVar("M", bound=Message)
