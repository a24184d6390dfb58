"""Peer wire messages: frozen value types and their one codec.

A message travels as one :mod:`~peer.mesh.wire.framing` frame whose header is a msgpack
array ``[tag, field, field, ...]`` in the field order of the dataclass below, and whose
trailer is empty except for :class:`Piece`, where it is the piece data. Positional arrays
keep headers small (a ``Have`` is 40 bytes) and make arity a cheap, strict check; the
protocol version in :class:`Handshake` is how fields get added later.

Rules:

1. Every field is validated in ``__post_init__`` (types, ranges, lengths), so a message
   that exists is well-formed whether we built it or decoded it. Building a bad one
   locally raises ``ValueError``/``TypeError`` (a bug at the call site).
2. :func:`decode` maps *every* failure (msgpack errors, wrong arity, wrong types, unknown
   tags, a trailer on a message that has none) to :class:`RemoteProtocolError`.
3. Digests are raw hash bytes internally (32 bytes for ``sha256:``, 64 for ``sha512:``, per
   the OCI image spec's registered algorithms); :func:`parse_digest` and
   :func:`format_digest` convert at the edges.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgpack

from peer.errors import RemoteProtocolError
from peer.mesh.wire.framing import Frame, encode_frame

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_REQUESTS",
    "MIN_NONCE",
    "MIN_VERSION",
    "PROTOCOL_VERSION",
    "Auth",
    "Bitfield",
    "Busy",
    "Cancel",
    "Declined",
    "Goodbye",
    "Handshake",
    "Have",
    "Interested",
    "Message",
    "Piece",
    "Request",
    "RequestKey",
    "decode",
    "encode",
    "format_digest",
    "parse_digest",
]

#: Bumped when a field or message is added, removed or changes meaning. Version 2 added
#: :class:`Declined` (sent only to peers that speak 2) and cuts blobs over 500 MiB into
#: smaller pieces (``peer.mesh.pieces.piece_size_for``).
PROTOCOL_VERSION: Final = 2
#: The oldest version we still speak; a peer below it is refused at the handshake.
MIN_VERSION: Final = 1
#: Largest piece (and so request) length: ``pieces.piece_size_for`` never picks more.
MAX_PIECE_LENGTH: Final = 1 << 24
#: Pieces per blob, as in ``tracker.protocol.MAX_PIECES`` (the tracker stores one hash each).
MAX_PIECES: Final = 16_384
#: Largest ``max_requests`` a peer may advertise; Kraken pipelines 3-5, Dragonfly 8-32.
MAX_REQUESTS: Final = 256
#: Blob sizes up to 2**53 stay exact everywhere (same bound as the tracker).
MAX_SIZE: Final = 1 << 53
MAX_RETRY_AFTER: Final = 3600.0
MAX_REASON: Final = 256
MAX_NONCE: Final = 64
#: Shortest nonce a side may use when the cluster is authenticated: 128 random bits make
#: a repeat (and so a replayable proof) as unlikely as guessing the secret.
MIN_NONCE: Final = 16
#: HMAC-SHA256 output size (the Auth message's ``mac``).
MAC_SIZE: Final = 32
_DIGEST_LENGTHS: Final = {32: "sha256", 64: "sha512"}
_ALGORITHM_LENGTHS: Final = {name: size for size, name in _DIGEST_LENGTHS.items()}
_DIGEST_RE: Final = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")
#: Same grammar as the tracker's peer ids, so one id names a node everywhere.
_PEER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

RequestKey = tuple[bytes, int, int]
"""``(digest, index, offset)``: how a request, its piece, busy or cancel are matched."""


def parse_digest(text: str) -> bytes:
    """``"sha256:<hex>"`` → raw hash bytes. Raises ValueError for anything else."""
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an OCI sha256/sha512 digest: {text!r}")
    return bytes.fromhex(match.group(2) or match.group(4))


def format_digest(raw: bytes) -> str:
    """Raw hash bytes → ``"sha256:<hex>"`` (the algorithm follows from the length)."""
    return f"{_DIGEST_LENGTHS[len(raw)]}:{raw.hex()}"


def _int(name: str, value: object, low: int, high: int) -> None:
    # type() rather than isinstance(): Python's True is an int, msgpack's is not.
    if type(value) is not int:
        raise TypeError(f"{name}: expected int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} not in [{low}, {high}]")


def _bytes(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{name}: expected bytes, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise ValueError(f"{name}: {len(value)} bytes not in [{low}, {high}]")


def _digest(value: object) -> None:
    _bytes("digest", value, 32, 64)
    assert isinstance(value, bytes)
    if len(value) not in _DIGEST_LENGTHS:
        raise ValueError(f"digest: {len(value)} bytes is neither sha256 nor sha512")


def _range(index: object, offset: object) -> None:
    _int("index", index, 0, MAX_PIECES - 1)
    _int("offset", offset, 0, MAX_PIECE_LENGTH - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class Handshake:
    """First message each way. ``max_requests`` is how many requests the sender accepts
    outstanding at once. ``nonce`` is fresh random bytes the peer's :class:`Auth` must
    cover when the cluster has a secret; ``mac`` is reserved (sent as None, ignored)."""

    TAG: ClassVar[int] = 1
    version: int = PROTOCOL_VERSION
    peer_id: str
    max_requests: int
    nonce: bytes = b""
    mac: bytes | None = None

    def __post_init__(self) -> None:
        _int("version", self.version, 0, 0xFFFF)
        if type(self.peer_id) is not str or not _PEER_ID_RE.fullmatch(self.peer_id):
            raise ValueError(f"peer_id: not a peer id: {self.peer_id!r}")
        _int("max_requests", self.max_requests, 1, MAX_REQUESTS)
        _bytes("nonce", self.nonce, 0, MAX_NONCE)
        if self.mac is not None:
            _bytes("mac", self.mac, 1, MAX_NONCE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Bitfield:
    """Which pieces of ``digest`` the sender has: bit ``i`` is ``have[i // 8] >> (7 - i % 8)``."""

    TAG: ClassVar[int] = 2
    digest: bytes
    size: int
    piece_size: int
    have: bytes

    def __post_init__(self) -> None:
        _digest(self.digest)
        _int("size", self.size, 0, MAX_SIZE)
        _int("piece_size", self.piece_size, 1, MAX_PIECE_LENGTH)
        count = -(-self.size // self.piece_size)
        if count > MAX_PIECES:
            raise ValueError(f"bitfield: {count} pieces exceeds {MAX_PIECES}")
        _bytes("have", self.have, (count + 7) // 8, (count + 7) // 8)
        if count % 8 and self.have[-1] & (0xFF >> (count % 8)):
            raise ValueError("bitfield: spare bits after the last piece are set")


@dataclass(frozen=True, kw_only=True, slots=True)
class Have:
    """The sender has just verified piece ``index`` of ``digest``."""

    TAG: ClassVar[int] = 3
    digest: bytes
    index: int

    def __post_init__(self) -> None:
        _digest(self.digest)
        _int("index", self.index, 0, MAX_PIECES - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class Interested:
    """The sender wants ``digest``: please answer with your :class:`Bitfield`."""

    TAG: ClassVar[int] = 4
    digest: bytes

    def __post_init__(self) -> None:
        _digest(self.digest)


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """Send ``length`` bytes of piece ``index`` from ``offset`` (answered by Piece or Busy)."""

    TAG: ClassVar[int] = 5
    digest: bytes
    index: int
    offset: int = 0
    length: int

    def __post_init__(self) -> None:
        _digest(self.digest)
        _range(self.index, self.offset)
        _int("length", self.length, 1, MAX_PIECE_LENGTH - self.offset)

    @property
    def key(self) -> RequestKey:
        return (self.digest, self.index, self.offset)


@dataclass(frozen=True, kw_only=True, slots=True)
class Piece:
    """The answer to a Request; ``data`` travels raw in the frame's trailer."""

    TAG: ClassVar[int] = 6
    digest: bytes
    index: int
    offset: int = 0
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _digest(self.digest)
        _range(self.index, self.offset)
        _bytes("data", self.data, 1, MAX_PIECE_LENGTH - self.offset)

    @property
    def key(self) -> RequestKey:
        return (self.digest, self.index, self.offset)


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancel:
    """Withdraw a Request; a Piece or Busy already on its way is discarded on arrival."""

    TAG: ClassVar[int] = 7
    digest: bytes
    index: int
    offset: int = 0

    def __post_init__(self) -> None:
        _digest(self.digest)
        _range(self.index, self.offset)

    @property
    def key(self) -> RequestKey:
        return (self.digest, self.index, self.offset)


@dataclass(frozen=True, kw_only=True, slots=True)
class Busy:
    """The answer to a Request the sender will not serve now (overloaded, or lacks the
    piece); ask again no sooner than ``retry_after`` seconds."""

    TAG: ClassVar[int] = 8
    digest: bytes
    index: int
    offset: int = 0
    retry_after: float

    def __post_init__(self) -> None:
        _digest(self.digest)
        _range(self.index, self.offset)
        value = self.retry_after
        if type(value) not in (int, float):
            raise TypeError(f"retry_after: expected a number, got {type(value).__name__}")
        if not (math.isfinite(value) and 0 <= value <= MAX_RETRY_AFTER):
            raise ValueError(f"retry_after: {value} not in [0, {MAX_RETRY_AFTER}]")

    @property
    def key(self) -> RequestKey:
        return (self.digest, self.index, self.offset)


@dataclass(frozen=True, kw_only=True, slots=True)
class Goodbye:
    """Last message from the sender; it will close the stream after it."""

    TAG: ClassVar[int] = 9
    reason: str = ""

    def __post_init__(self) -> None:
        if type(self.reason) is not str:
            raise TypeError(f"reason: expected str, got {type(self.reason).__name__}")
        if len(self.reason) > MAX_REASON:
            raise ValueError(f"reason: longer than {MAX_REASON} characters")


@dataclass(frozen=True, kw_only=True, slots=True)
class Auth:
    """Second message each way when the cluster has a secret: the sender's proof that it
    knows it, HMAC-SHA256 over both handshakes (see :mod:`~peer.mesh.wire.auth`)."""

    TAG: ClassVar[int] = 10
    mac: bytes

    def __post_init__(self) -> None:
        _bytes("mac", self.mac, MAC_SIZE, MAC_SIZE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Declined:
    """The answer to an :class:`Interested` the sender will not take up now: it has as many
    peers for ``digest`` as it serves. Ask again no sooner than ``retry_after`` seconds
    (version 2; a version 1 peer is never sent one)."""

    TAG: ClassVar[int] = 11
    digest: bytes
    retry_after: float

    def __post_init__(self) -> None:
        _digest(self.digest)
        value = self.retry_after
        if type(value) not in (int, float):
            raise TypeError(f"retry_after: expected a number, got {type(value).__name__}")
        if not (math.isfinite(value) and 0 <= value <= MAX_RETRY_AFTER):
            raise ValueError(f"retry_after: {value} not in [0, {MAX_RETRY_AFTER}]")


Message = (
    Handshake
    | Bitfield
    | Have
    | Interested
    | Request
    | Piece
    | Cancel
    | Busy
    | Goodbye
    | Auth
    | Declined
)
_TYPES: Final = (
    Handshake, Bitfield, Have, Interested, Request, Piece, Cancel, Busy, Goodbye, Auth,
    Declined,
)  # fmt: skip
_TRAILER: Final = "data"
#: tag -> (constructor, header field names in wire order)
_LAYOUT: Final[dict[int, tuple[Callable[..., Message], tuple[str, ...]]]] = {
    cls.TAG: (cls, tuple(f.name for f in fields(cls) if f.name != _TRAILER)) for cls in _TYPES
}


def encode(message: Message) -> bytes:
    """Frame ``message`` for the wire (header packed by msgpack, piece data raw)."""
    _, names = _LAYOUT[message.TAG]
    values: list[Any] = [message.TAG]
    values.extend(getattr(message, name) for name in names)
    header = msgpack.packb(values, use_bin_type=True)
    return encode_frame(header, message.data if isinstance(message, Piece) else b"")


def decode(frame: Frame) -> Message:
    """Turn one frame into a message.

    Raises:
        RemoteProtocolError: Whatever is wrong with the frame (the only exception).
    """
    try:
        # Header size is bounded by the frame (u16), so msgpack's own caps, which default
        # to the input length, cannot make it allocate more than the header weighs.
        obj = msgpack.unpackb(frame.header, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"undecodable header: {type(exc).__name__} {exc}") from exc
    if type(obj) is not list or not obj:
        raise RemoteProtocolError("header is not a non-empty array")
    tag = obj[0]
    if type(tag) is not int or tag not in _LAYOUT:
        raise RemoteProtocolError(f"unknown message tag {tag!r}")
    build, names = _LAYOUT[tag]
    if len(obj) - 1 != len(names):
        raise RemoteProtocolError(f"tag {tag}: {len(obj) - 1} fields, expected {len(names)}")
    kwargs = dict(zip(names, obj[1:], strict=True))
    if build is Piece:
        kwargs[_TRAILER] = frame.trailer
    elif frame.trailer:
        raise RemoteProtocolError(f"tag {tag}: unexpected {len(frame.trailer)}-byte trailer")
    try:
        return build(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"tag {tag}: {exc}") from exc
