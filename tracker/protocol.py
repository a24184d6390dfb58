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
``sha512:`` + 128); piece hashes are raw 32-byte SHA-256 values, or ``b""`` for a piece
whose hash is not known yet (see :class:`~tracker.messages.PieceHashes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import msgpack

from tracker import _wire
from tracker.errors import BadMessage, UnsupportedVersion
from tracker.messages import (
    MAX_BODY,
    MAX_ERROR_MESSAGE,
    MAX_HELD,
    MAX_IN_PROGRESS,
    MAX_LEASE_RUN,
    MAX_LEASE_TTL,
    MAX_LOOKUP_LIMIT,
    MAX_NODE_ERRORS,
    MAX_PIECE_INDEX,
    MAX_PIECE_SIZE,
    MAX_PIECES,
    MAX_SIZE,
    MEDIA_TYPE,
    MIN_PIECE_SIZE,
    PROTOCOL_VERSION,
    Ack,
    Announce,
    AnnounceReply,
    BlobHeld,
    BlobInProgress,
    LeaseReply,
    LeaseRequest,
    Leave,
    Lookup,
    LookupReply,
    M,
    Message,
    NodeError,
    PeerAddr,
    PieceHashes,
    PiecesPutReply,
    PiecesQuery,
    TagPutReply,
    TagQuery,
    TagRecord,
)

__all__ = [
    "MAX_BODY",
    "MAX_ERROR_MESSAGE",
    "MAX_HELD",
    "MAX_IN_PROGRESS",
    "MAX_LEASE_RUN",
    "MAX_LEASE_TTL",
    "MAX_LOOKUP_LIMIT",
    "MAX_NODE_ERRORS",
    "MAX_PIECES",
    "MAX_PIECE_INDEX",
    "MAX_PIECE_SIZE",
    "MAX_SIZE",
    "MEDIA_TYPE",
    "MIN_PIECE_SIZE",
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
    "M",
    "Message",
    "NodeError",
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

# msgpack-level caps (per object): no string is longer than a tag record's Accept key,
# no bytes longer than a SHA-256, no array longer than the piece list, no map wider than
# the widest message.
_MAX_STR: Final = 2048
_MAX_BIN: Final = 64
_MAX_ARRAY: Final = max(MAX_PIECES, MAX_HELD)
_MAX_MAP: Final = 32

Validator = Callable[[object, str], Any]
_ABSENT: Final = object()


def _int(lo: int, hi: int) -> Validator:
    return lambda v, where: _wire.int_(v, where, lo, hi)


def _float(lo: float, hi: float) -> Validator:
    return lambda v, where: _wire.float_(v, where, lo, hi)


def _str(rule: _wire.Rule) -> Validator:
    return lambda v, where: _wire.str_(v, where, rule)


def _bytes(lo: int, hi: int) -> Validator:
    return lambda v, where: _wire.bytes_(v, where, lo, hi)


def _rows(cls: type, max_len: int) -> Validator:
    """An array of compact records: each an array of ``cls``'s fields in order."""
    spec = _ROWS[cls]

    def check(v: object, where: str) -> tuple[Any, ...]:
        out = []
        for row in _wire.list_(v, where, max_len):
            if not isinstance(row, list) or len(row) != len(spec):
                raise BadMessage(f"{where}: every item must be an array of {len(spec)}")
            kw = {n: valid(x, f"{where}.{n}") for (n, valid), x in zip(spec, row, strict=True)}
            out.append(cls(**kw))
        return tuple(out)

    return check


def _blob_rows(cls: type[BlobHeld] | type[BlobInProgress], max_len: int) -> Validator:
    """Fast path for the held / in-progress lists (thousands of rows per announce).

    One plain loop over the rows, and one regex pass over the joined digest column: about
    three times faster than validating field by field, which matters at thousands of
    announces per second.
    """
    arity = len(cls._fields)
    new = tuple.__new__

    def check(v: object, where: str) -> tuple[Any, ...]:
        out = []
        for row in _wire.list_(v, where, max_len):
            if type(row) is not list or len(row) != arity or type(row[0]) is not str:
                raise BadMessage(f"{where}: every item must be an array of {arity}")
            size = row[1]
            if type(size) is not int or not 0 <= size <= MAX_SIZE:
                raise BadMessage(f"{where}: size must be an integer in [0, {MAX_SIZE}]")
            if arity == 3:
                held = row[2]
                if type(held) is not int or not 0 <= held <= size:
                    raise BadMessage(f"{where}: bytes held must be an integer in [0, size]")
            out.append(new(cls, row))
        if out and _DIGESTS.fullmatch("\n".join([row[0] for row in out])) is None:
            raise BadMessage(f"{where}: not every digest is a valid sha256 or sha512 digest")
        return tuple(out)

    return check


def _hashes(v: object, where: str) -> tuple[bytes, ...]:
    """A piece hash list: each entry a 32-byte SHA-256, or ``b""`` for "not known yet"."""
    out = tuple(_wire.bytes_(h, where, 0, 32) for h in _wire.list_(v, where, MAX_PIECES))
    for h in out:
        if h and len(h) != 32:
            raise BadMessage(f"{where}: {len(h)} bytes, expected 32 (or 0 for an unknown piece)")
    return out


_BOOL: Final[Validator] = _wire.bool_
#: A newline-separated column of digests (see _blob_rows); the same grammar as _wire.DIGEST,
#: factored so the regex engine does not backtrack on the common "sha" prefix.
_ONE_DIGEST: Final = r"sha(?:256:[0-9a-f]{64}|512:[0-9a-f]{128})"
_DIGESTS: Final = re.compile(rf"{_ONE_DIGEST}(?:\n{_ONE_DIGEST})*")
_DIGEST: Final = _str(_wire.DIGEST)
_PEER_ID: Final = _str(_wire.PEER_ID)
_SESSION: Final = _bytes(8, 32)
_SIZE: Final = _int(0, MAX_SIZE)
_COUNT: Final = _int(0, 1 << 16)
_TOTAL: Final = _int(0, (1 << 64) - 1)
_TIME: Final = _float(0.0, 1e12)
_SECONDS: Final = _float(0.0, 86_400.0)
#: A reported error line: any characters but control characters (no log injection).
_ERROR_MESSAGE: Final = _wire.Rule(
    "error message", re.compile(f"[^\\x00-\\x1f\\x7f]{{0,{MAX_ERROR_MESSAGE}}}"), MAX_ERROR_MESSAGE
)
_TAG_KEY: Final[dict[str, Validator]] = {
    "registry": _str(_wire.REGISTRY),
    "repository": _str(_wire.REPOSITORY),
    "tag": _str(_wire.TAG),
    "accept": _str(_wire.ACCEPT),
}

# Compact records inside arrays: field name and validator, in dataclass field order.
_ROWS: Final[dict[type, list[tuple[str, Validator]]]] = {
    PeerAddr: [
        ("peer_id", _PEER_ID),
        ("host", _str(_wire.HOST)),
        ("port", _int(1, 65535)),
        ("complete", _BOOL),
        ("bytes_held", _SIZE),
        ("load", _COUNT),
        ("upload_slots", _COUNT),
    ],
    NodeError: [
        ("at", _TIME),
        ("kind", _str(_wire.KIND)),
        ("message", _str(_ERROR_MESSAGE)),
    ],
}

# Every message: its kind ("t") and its fields with their validators.
_SPECS: Final[dict[type, tuple[str, dict[str, Validator]]]] = {
    Announce: ("announce", {
        "peer_id": _PEER_ID, "session": _SESSION, "host": _str(_wire.HOST),
        "port": _int(1, 65535), "held": _blob_rows(BlobHeld, MAX_HELD),
        "in_progress": _blob_rows(BlobInProgress, MAX_IN_PROGRESS), "upload_slots": _COUNT,
        "load": _COUNT, "bytes_served": _TOTAL, "bytes_from_origin": _TOTAL,
        "bytes_from_peers": _TOTAL, "errors": _rows(NodeError, MAX_NODE_ERRORS),
    }),
    AnnounceReply: ("announce_reply", {
        "interval": _SECONDS, "peer_ttl": _SECONDS, "draining": _BOOL,
    }),
    Leave: ("leave", {"peer_id": _PEER_ID, "session": _SESSION}),
    Ack: ("ack", {}),
    Lookup: ("lookup", {
        "digest": _DIGEST, "peer_id": _PEER_ID, "limit": _int(1, MAX_LOOKUP_LIMIT),
    }),
    LookupReply: ("lookup_reply", {
        "digest": _DIGEST, "size": _SIZE, "peers": _rows(PeerAddr, MAX_LOOKUP_LIMIT),
    }),
    PieceHashes: ("pieces", {
        "digest": _DIGEST, "size": _SIZE, "piece_size": _int(MIN_PIECE_SIZE, MAX_PIECE_SIZE),
        "hashes": _hashes, "peer_id": _PEER_ID,
    }),
    PiecesPutReply: ("pieces_put_reply", {"stored": _BOOL, "conflict": _BOOL}),
    PiecesQuery: ("pieces_query", {"digest": _DIGEST}),
    TagQuery: ("tag_query", _TAG_KEY),
    TagRecord: ("tag", _TAG_KEY | {
        "digest": _DIGEST, "media_type": _str(_wire.MEDIA_TYPE), "size": _SIZE,
        "resolved_at": _TIME,
    }),
    TagPutReply: ("tag_put_reply", {"stored": _BOOL}),
    LeaseRequest: ("lease", {
        "digest": _DIGEST, "piece_index": _int(0, MAX_PIECE_INDEX), "peer_id": _PEER_ID,
        "session": _SESSION, "ttl": _float(0.0, MAX_LEASE_TTL),
        "count": _int(1, MAX_LEASE_RUN), "insist": _BOOL,
    }),
    LeaseReply: ("lease_reply", {
        "granted": _BOOL, "holder": _PEER_ID, "expires_at": _TIME, "capped": _BOOL,
        "count": _int(1, MAX_LEASE_RUN),
    }),
}  # fmt: skip

#: Fields added in minor revisions: absent on the wire means the dataclass default, and
#: :func:`encode` leaves them out while they hold that default, so an older tracker or
#: peer sees exactly the bytes it always did.
_OPTIONAL: Final[dict[type, dict[str, object]]] = {
    Announce: {"errors": ()},
    LeaseRequest: {"count": 1, "insist": False},
    LeaseReply: {"capped": False, "count": 1},
}


def _checked(message: Any) -> Any:
    """Cross-field rules that no single field's validator can see."""
    if isinstance(message, PieceHashes):
        expected = -(-message.size // message.piece_size)
        if len(message.hashes) != expected:
            raise BadMessage(
                f"hashes: {len(message.hashes)} given for {expected} pieces "
                f"of {message.piece_size} bytes in {message.size}"
            )
    return message


def _to_wire(value: object) -> object:
    if isinstance(value, tuple):  # held / in_progress rows are NamedTuples: tuples too
        return [_to_wire(x) for x in value]
    rows = _ROWS.get(type(value))
    if rows is not None:
        return [getattr(value, name) for name, _ in rows]
    return value


def encode(message: Message) -> bytes:
    """Serialise one message to its msgpack body.

    Args:
        message: Any message type of this module.

    Returns:
        The bytes to send as an HTTP body.
    """
    kind, spec = _SPECS[type(message)]
    optional = _OPTIONAL.get(type(message), {})
    fields = {
        name: _to_wire(value)
        for name in spec
        if (value := getattr(message, name)) != optional.get(name, _ABSENT)
    }
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
    kind, spec = _SPECS[cls]
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
    version = fields.get("v", _int(0, 1 << 16))
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version}; we speak {PROTOCOL_VERSION}")
    got = fields.get("t", _str(_wire.KIND))
    if got != kind:
        raise BadMessage(f"expected a {kind!r} message, got {got!r}")
    optional = _OPTIONAL.get(cls, {})
    message = _checked(
        cls(**{
            name: fields.get(name, valid)
            for name, valid in spec.items()
            if name not in optional or name in fields
        })
    )  # fmt: skip
    assert isinstance(message, cls)
    return message
