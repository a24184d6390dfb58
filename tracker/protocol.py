"""The tracker's peer protocol: message types and their msgpack codec (sans-IO).

Theory of operation
-------------------
Peers talk to the tracker over plain HTTP; every request and answer body on the ``/v1/*``
routes is **one msgpack map** (``Content-Type: application/msgpack``). This module is the
single source of truth for those bodies: the tracker decodes what peers encode and the
peer package imports it (``tracker`` never imports ``peer``). It does no I/O and reads no
clock: times are plain floats (Unix seconds) chosen by whoever builds the message.

Every map carries ``"v"`` (the protocol version, :data:`PROTOCOL_VERSION`) and ``"t"``
(the message kind), so a body sent to the wrong route or by a newer peer is refused with a
clear reason instead of being half-understood. Unknown extra keys are ignored, so a later
minor revision may add optional fields without a version bump; removing or retyping a
field needs a new version.

Rules:

1. :func:`encode` never fails on a message built from this module's types; fields are
   validated on the way *in* (:func:`decode`), where the bytes are untrusted.
2. Every decoding failure, whatever the cause (bad msgpack, trailing bytes, wrong type,
   out-of-range number, unknown kind), raises :class:`~tracker.errors.BadMessage`, or
   :class:`~tracker.errors.UnsupportedVersion` for a version mismatch (a subclass of the
   same ``BadRequest``), and nothing else.
3. Limits are explicit (the ``MAX_*`` constants below) and checked during unpacking by
   msgpack itself, so a hostile body cannot make us allocate more than it weighs.

Digests follow the OCI image spec's registered algorithms (``sha256:`` + 64 lowercase hex,
``sha512:`` + 128); piece hashes are raw 32-byte SHA-256 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

import msgpack

from tracker import _wire
from tracker.errors import BadMessage, UnsupportedVersion

__all__ = [
    "MAX_BODY",
    "MAX_HELD",
    "MAX_IN_PROGRESS",
    "MAX_LOOKUP_LIMIT",
    "MAX_PIECES",
    "MEDIA_TYPE",
    "PROTOCOL_VERSION",
    "Ack",
    "Announce",
    "AnnounceReply",
    "BlobHeld",
    "BlobInProgress",
    "LeaseReply",
    "LeaseRequest",
    "Leave",
    "Lookup",
    "LookupReply",
    "Message",
    "PeerAddr",
    "PieceHashes",
    "PiecesPutReply",
    "PiecesQuery",
    "TagPutReply",
    "TagQuery",
    "TagRecord",
    "decode",
    "encode",
]

#: Bumped when a field is removed or changes meaning; peers and tracker must agree.
PROTOCOL_VERSION: Final = 1
#: ``Content-Type`` of every ``/v1/*`` body (the IANA-registered ``vnd.msgpack`` is rare).
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

# msgpack-level caps (per object): no string is longer than a tag record's Accept key,
# no bytes longer than a SHA-256, no array longer than the piece list, no map wider than
# the widest message.
_MAX_STR: Final = 2048
_MAX_BIN: Final = 64
_MAX_ARRAY: Final = max(MAX_PIECES, MAX_HELD)
_MAX_MAP: Final = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobHeld:
    """A blob a peer holds completely."""

    digest: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobInProgress:
    """A blob a peer is downloading, with how many of its bytes it already holds."""

    digest: str
    size: int
    bytes_held: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Announce:
    """A peer's full state, sent on start and every ``interval`` (idempotent).

    ``session`` is a random value the peer picks once per process: the tracker binds a live
    peer id to it, so another process cannot take over or evict that id (409).
    ``upload_slots`` is how many uploads the peer serves at once and ``load`` how many it
    serves now; the ``bytes_*`` counters are totals since the peer started.
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
    """SHA-256 of every piece of a blob, recorded by the peer that fetched it from the origin.

    The first record for a digest wins; a later different one is counted as a conflict.
    """

    digest: str
    size: int
    piece_size: int
    hashes: tuple[bytes, ...]
    peer_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PiecesPutReply:
    """``stored`` is False when a record already existed; ``conflict`` when it differed."""

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
    """

    digest: str
    piece_index: int
    peer_id: str
    session: bytes
    ttl: float


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseReply:
    """``granted`` to the asker, or held by ``holder`` until ``expires_at`` (Unix seconds)."""

    granted: bool
    holder: str
    expires_at: float


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


def encode(message: Message) -> bytes:
    """Serialise one message to its msgpack body.

    Args:
        message: Any message type of this module.

    Returns:
        The bytes to send as an HTTP body.
    """
    kind, to_wire, _ = _CODECS[type(message)]
    fields = to_wire(message)
    fields["v"] = PROTOCOL_VERSION
    fields["t"] = kind
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]  # untyped lib


def decode(cls: type[M], body: bytes) -> M:
    """Parse and validate a body that must hold a message of type ``cls``.

    Args:
        cls: The expected message type (the route decides it).
        body: The raw request or response body.

    Returns:
        The message.

    Raises:
        BadMessage: The body is not a valid ``cls`` message, for any reason.
        UnsupportedVersion: The body is a message of another protocol version.
    """
    kind, _, from_wire = _CODECS[cls]
    if len(body) > MAX_BODY:
        raise BadMessage(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    try:
        raw = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=_MAX_STR,
            max_bin_len=_MAX_BIN,
            max_array_len=_MAX_ARRAY,
            max_map_len=_MAX_MAP,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo (ValueError, FormatError, TypeError...)
        raise BadMessage(f"not a msgpack body: {type(exc).__name__}") from None
    fields = _wire.Fields.of(raw, "message")
    version = fields.int_("v", 0, 1 << 16)
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version}; this tracker speaks {PROTOCOL_VERSION}")
    got = fields.str_("t", _wire.KIND)
    if got != kind:
        raise BadMessage(f"expected a {kind!r} message, got {got!r}")
    message = from_wire(fields)
    assert isinstance(message, cls)
    return message


# --- per-message codecs -------------------------------------------------------------------


def _announce_out(m: Announce) -> dict[str, object]:
    return {
        "peer_id": m.peer_id,
        "session": m.session,
        "host": m.host,
        "port": m.port,
        "held": [[b.digest, b.size] for b in m.held],
        "in_progress": [[b.digest, b.size, b.bytes_held] for b in m.in_progress],
        "upload_slots": m.upload_slots,
        "load": m.load,
        "bytes_served": m.bytes_served,
        "bytes_from_origin": m.bytes_from_origin,
        "bytes_from_peers": m.bytes_from_peers,
    }


def _announce_in(f: _wire.Fields) -> Announce:
    held = tuple(
        BlobHeld(digest=_wire.digest(e[0], "held.digest"), size=_wire.int_(e[1], "held.size", 0, MAX_SIZE))
        for e in f.rows("held", 2, MAX_HELD)
    )
    in_progress = []
    for e in f.rows("in_progress", 3, MAX_IN_PROGRESS):
        size = _wire.int_(e[1], "in_progress.size", 0, MAX_SIZE)
        in_progress.append(
            BlobInProgress(
                digest=_wire.digest(e[0], "in_progress.digest"),
                size=size,
                bytes_held=_wire.int_(e[2], "in_progress.bytes_held", 0, size),
            )
        )
    return Announce(
        peer_id=f.str_("peer_id", _wire.PEER_ID),
        session=f.bytes_("session", 8, 32),
        host=f.str_("host", _wire.HOST),
        port=f.int_("port", 1, 65535),
        held=held,
        in_progress=tuple(in_progress),
        upload_slots=f.int_("upload_slots", 0, 1 << 16),
        load=f.int_("load", 0, 1 << 16),
        bytes_served=f.int_("bytes_served", 0, 1 << 63),
        bytes_from_origin=f.int_("bytes_from_origin", 0, 1 << 63),
        bytes_from_peers=f.int_("bytes_from_peers", 0, 1 << 63),
    )


def _peer_out(p: PeerAddr) -> list[object]:
    return [p.peer_id, p.host, p.port, p.complete, p.bytes_held, p.load, p.upload_slots]


def _peer_in(e: list[object]) -> PeerAddr:
    return PeerAddr(
        peer_id=_wire.str_(e[0], "peers.peer_id", _wire.PEER_ID),
        host=_wire.str_(e[1], "peers.host", _wire.HOST),
        port=_wire.int_(e[2], "peers.port", 1, 65535),
        complete=_wire.bool_(e[3], "peers.complete"),
        bytes_held=_wire.int_(e[4], "peers.bytes_held", 0, MAX_SIZE),
        load=_wire.int_(e[5], "peers.load", 0, 1 << 16),
        upload_slots=_wire.int_(e[6], "peers.upload_slots", 0, 1 << 16),
    )


def _pieces_in(f: _wire.Fields) -> PieceHashes:
    size = f.int_("size", 0, MAX_SIZE)
    piece_size = f.int_("piece_size", MIN_PIECE_SIZE, MAX_PIECE_SIZE)
    hashes = f.list_("hashes", MAX_PIECES)
    expected = -(-size // piece_size)
    if len(hashes) != expected:
        raise BadMessage(f"hashes: {len(hashes)} given, {expected} pieces of {piece_size} in {size}")
    return PieceHashes(
        digest=f.str_("digest", _wire.DIGEST),
        size=size,
        piece_size=piece_size,
        hashes=tuple(_wire.bytes_(h, "hashes[]", 32, 32) for h in hashes),
        peer_id=f.str_("peer_id", _wire.PEER_ID),
    )


def _tag_key_in(f: _wire.Fields) -> dict[str, str]:
    return {
        "registry": f.str_("registry", _wire.REGISTRY),
        "repository": f.str_("repository", _wire.REPOSITORY),
        "tag": f.str_("tag", _wire.TAG),
        "accept": f.str_("accept", _wire.ACCEPT),
    }


def _tag_out(m: TagQuery | TagRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "registry": m.registry,
        "repository": m.repository,
        "tag": m.tag,
        "accept": m.accept,
    }
    if isinstance(m, TagRecord):
        out |= {"digest": m.digest, "media_type": m.media_type, "size": m.size}
        out["resolved_at"] = m.resolved_at
    return out


def _tag_record_in(f: _wire.Fields) -> TagRecord:
    return TagRecord(
        **_tag_key_in(f),
        digest=f.str_("digest", _wire.DIGEST),
        media_type=f.str_("media_type", _wire.MEDIA_TYPE),
        size=f.int_("size", 0, MAX_SIZE),
        resolved_at=f.float_("resolved_at", 0.0, 1e12),
    )


_Codec = tuple[str, _wire.Encoder, _wire.Decoder]
_CODECS: Final[dict[type, _Codec]] = {
    Announce: ("announce", _announce_out, _announce_in),
    AnnounceReply: (
        "announce_reply",
        lambda m: {"interval": m.interval, "peer_ttl": m.peer_ttl, "draining": m.draining},
        lambda f: AnnounceReply(
            interval=f.float_("interval", 0.0, 86_400.0),
            peer_ttl=f.float_("peer_ttl", 0.0, 86_400.0),
            draining=f.bool_("draining"),
        ),
    ),
    Leave: (
        "leave",
        lambda m: {"peer_id": m.peer_id, "session": m.session},
        lambda f: Leave(peer_id=f.str_("peer_id", _wire.PEER_ID), session=f.bytes_("session", 8, 32)),
    ),
    Ack: ("ack", lambda m: {}, lambda f: Ack()),
    Lookup: (
        "lookup",
        lambda m: {"digest": m.digest, "peer_id": m.peer_id, "limit": m.limit},
        lambda f: Lookup(
            digest=f.str_("digest", _wire.DIGEST),
            peer_id=f.str_("peer_id", _wire.PEER_ID),
            limit=f.int_("limit", 1, MAX_LOOKUP_LIMIT),
        ),
    ),
    LookupReply: (
        "lookup_reply",
        lambda m: {"digest": m.digest, "size": m.size, "peers": [_peer_out(p) for p in m.peers]},
        lambda f: LookupReply(
            digest=f.str_("digest", _wire.DIGEST),
            size=f.int_("size", 0, MAX_SIZE),
            peers=tuple(_peer_in(e) for e in f.rows("peers", 7, MAX_LOOKUP_LIMIT)),
        ),
    ),
    PieceHashes: (
        "pieces",
        lambda m: {
            "digest": m.digest,
            "size": m.size,
            "piece_size": m.piece_size,
            "hashes": list(m.hashes),
            "peer_id": m.peer_id,
        },
        _pieces_in,
    ),
    PiecesPutReply: (
        "pieces_put_reply",
        lambda m: {"stored": m.stored, "conflict": m.conflict},
        lambda f: PiecesPutReply(stored=f.bool_("stored"), conflict=f.bool_("conflict")),
    ),
    PiecesQuery: (
        "pieces_query",
        lambda m: {"digest": m.digest},
        lambda f: PiecesQuery(digest=f.str_("digest", _wire.DIGEST)),
    ),
    TagQuery: ("tag_query", _tag_out, lambda f: TagQuery(**_tag_key_in(f))),
    TagRecord: ("tag", _tag_out, _tag_record_in),
    TagPutReply: (
        "tag_put_reply",
        lambda m: {"stored": m.stored},
        lambda f: TagPutReply(stored=f.bool_("stored")),
    ),
    LeaseRequest: (
        "lease",
        lambda m: {
            "digest": m.digest,
            "piece_index": m.piece_index,
            "peer_id": m.peer_id,
            "session": m.session,
            "ttl": m.ttl,
        },
        lambda f: LeaseRequest(
            digest=f.str_("digest", _wire.DIGEST),
            piece_index=f.int_("piece_index", 0, MAX_PIECE_INDEX),
            peer_id=f.str_("peer_id", _wire.PEER_ID),
            session=f.bytes_("session", 8, 32),
            ttl=f.float_("ttl", 0.0, MAX_LEASE_TTL),
        ),
    ),
    LeaseReply: (
        "lease_reply",
        lambda m: {"granted": m.granted, "holder": m.holder, "expires_at": m.expires_at},
        lambda f: LeaseReply(
            granted=f.bool_("granted"),
            holder=f.str_("holder", _wire.PEER_ID),
            expires_at=f.float_("expires_at", 0.0, 1e12),
        ),
    ),
}
