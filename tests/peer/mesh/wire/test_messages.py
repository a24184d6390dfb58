"""Message codec: pinned bytes, Hypothesis round trips, and a table of malformed headers."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import RemoteProtocolError
from peer.mesh.wire.connection import DEFAULT_MAX_FRAME
from peer.mesh.wire.framing import Frame, FrameBuffer
from peer.mesh.wire.messages import (
    MAX_PIECE_LENGTH,
    MAX_PIECES,
    MAX_REQUESTS,
    Bitfield,
    Busy,
    Cancel,
    Declined,
    Goodbye,
    Handshake,
    Have,
    Interested,
    Message,
    Piece,
    Request,
    decode,
    encode,
    format_digest,
    parse_digest,
)

D = bytes(range(32))


def roundtrip(message: Message) -> Message:
    buf = FrameBuffer(max_frame=DEFAULT_MAX_FRAME)
    buf.feed(encode(message))
    frame = buf.next_frame()
    assert frame is not None
    assert len(buf) == 0
    return decode(frame)


def header(*values: Any) -> Frame:
    return Frame(msgpack.packb(list(values)))


# ---- pinned wire format ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wire_hex"),
    [
        (Have(digest=D, index=7), "00000027002593 03 c420" + D.hex() + "07"),
        (Piece(digest=D, index=1, data=b"xyz"), "0000002b002694 06 c420" + D.hex() + "0100 78797a"),
        (Goodbye(reason="bye"), "00000008000692 09 a3627965"),
        (Declined(digest=D, retry_after=5), "00000027002593 0b c420" + D.hex() + "05"),
    ],
)
def test_wire_format_is_pinned(message: Message, wire_hex: str) -> None:
    assert encode(message) == bytes.fromhex(wire_hex.replace(" ", ""))


def test_piece_data_is_the_raw_trailer() -> None:
    wire = encode(Piece(digest=D, index=0, data=b"\x00PIECE-BYTES"))
    assert wire.endswith(b"\x00PIECE-BYTES")
    assert b"PIECE" not in wire[: -len(b"\x00PIECE-BYTES")]


def test_piece_repr_hides_data() -> None:
    assert "data" not in repr(Piece(digest=D, index=0, data=b"secret" * 1000))


# ---- round trips -------------------------------------------------------------------------

digests = st.sampled_from([32, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
indexes = st.integers(0, MAX_PIECES - 1)
offsets = st.integers(0, 1 << 20)
peer_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


@st.composite
def bitfields(draw: st.DrawFn) -> Bitfield:
    piece_size = draw(st.integers(1, MAX_PIECE_LENGTH))
    count = draw(st.integers(0, 300))
    size = draw(st.integers(max(0, (count - 1) * piece_size + 1), count * piece_size))
    raw = bytearray(draw(st.binary(min_size=(count + 7) // 8, max_size=(count + 7) // 8)))
    if count % 8:
        raw[-1] &= (0xFF << (8 - count % 8)) & 0xFF
    return Bitfield(digest=draw(digests), size=size, piece_size=piece_size, have=bytes(raw))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    offset = draw(offsets)
    length = draw(st.integers(1, MAX_PIECE_LENGTH - offset))
    return Request(digest=draw(digests), index=draw(indexes), offset=offset, length=length)


messages = st.one_of(
    st.builds(
        Handshake,
        version=st.integers(0, 0xFFFF),
        peer_id=peer_ids,
        max_requests=st.integers(1, MAX_REQUESTS),
        nonce=st.binary(max_size=64),
        mac=st.none() | st.binary(min_size=1, max_size=64),
    ),
    bitfields(),
    st.builds(Have, digest=digests, index=indexes),
    st.builds(Interested, digest=digests),
    requests(),
    st.builds(
        Piece,
        digest=digests,
        index=indexes,
        offset=offsets,
        data=st.binary(min_size=1, max_size=300),
    ),
    st.builds(Cancel, digest=digests, index=indexes, offset=offsets),
    st.builds(
        Busy,
        digest=digests,
        index=indexes,
        offset=offsets,
        retry_after=st.integers(0, 3600) | st.floats(0, 3600, allow_nan=False),
    ),
    st.builds(Goodbye, reason=st.text(max_size=256)),
    st.builds(
        Declined,
        digest=digests,
        retry_after=st.integers(0, 3600) | st.floats(0, 3600, allow_nan=False),
    ),
)


@given(messages)
def test_roundtrip(message: Message) -> None:
    assert roundtrip(message) == message


@given(st.binary(max_size=200), st.binary(max_size=20))
def test_arbitrary_bytes_raise_only_remote_protocol_error(head: bytes, trailer: bytes) -> None:
    try:
        decode(Frame(head, trailer))
    except RemoteProtocolError:
        pass


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.binary(max_size=70),
    st.text(max_size=70),
)


@given(st.integers(0, 12), st.lists(scalars, max_size=6), st.binary(max_size=8))
def test_wellformed_msgpack_with_wrong_fields_raises_only_remote_error(
    tag: int, fields: list[Any], trailer: bytes
) -> None:
    try:
        decode(Frame(msgpack.packb([tag, *fields]), trailer))
    except RemoteProtocolError:
        pass


# ---- malformed headers -------------------------------------------------------------------

MALFORMED: list[tuple[str, Frame, str]] = [
    ("reserved msgpack byte", Frame(b"\xc1"), "undecodable"),
    ("truncated", Frame(msgpack.packb([3, D, 1])[:-1]), "undecodable"),
    ("extra data after the array", Frame(msgpack.packb([9, ""]) + b"\x00"), "extra data"),
    ("nested too deep", Frame(b"\x91" * 5000 + b"\x01"), "undecodable"),
    ("not an array", Frame(msgpack.packb({"t": 3})), "not a non-empty array"),
    ("a scalar", Frame(msgpack.packb(3)), "not a non-empty array"),
    ("empty array", Frame(msgpack.packb([])), "not a non-empty array"),
    ("non-str map key", Frame(msgpack.packb([9, {1: 2}])), "map key"),
    ("unknown tag", header(99), "unknown message tag"),
    ("tag as str", header("3", D, 1), "unknown message tag"),
    ("tag as bool", header(True, ""), "unknown message tag"),
    ("tag as ext", Frame(msgpack.packb([msgpack.ExtType(1, b"x")])), "unknown message tag"),
    ("too few fields", header(3, D), "1 fields, expected 2"),
    ("too many fields", header(3, D, 1, 2), "3 fields, expected 2"),
    ("bool index", header(3, D, True), "got bool"),
    ("negative index", header(3, D, -1), "index: -1"),
    ("index past MAX_PIECES", header(3, D, MAX_PIECES), "index: 16384"),
    ("float index", header(3, D, 1.0), "got float"),
    ("digest as str", header(3, "x" * 32, 1), "digest: expected bytes"),
    ("digest of 31 bytes", header(3, D[:31], 1), "digest: 31"),
    ("digest of 48 bytes", header(3, D + D[:16], 1), "neither"),
    ("empty peer id", header(1, 1, "", 4, b"", None), "peer_id"),
    ("peer id with a slash", header(1, 1, "a/b", 4, b"", None), "peer_id"),
    ("negative version", header(1, -1, "a", 4, b"", None), "version"),
    ("zero max_requests", header(1, 1, "a", 0, b"", None), "max_requests"),
    ("too many max_requests", header(1, 1, "a", MAX_REQUESTS + 1, b"", None), "max_requests"),
    ("nonce too long", header(1, 1, "a", 4, b"n" * 65, None), "nonce"),
    ("empty mac", header(1, 1, "a", 4, b"", b""), "mac"),
    ("declined with a negative wait", header(11, D, -1), "retry_after"),
    ("declined with no wait", header(11, D), "1 fields, expected 2"),
    ("zero-length request", header(5, D, 0, 0, 0), "length: 0"),
    ("request past the largest piece", header(5, D, 0, 1, MAX_PIECE_LENGTH), "length: 16777216"),
    ("busy with NaN", header(8, D, 0, 0, math.nan), "retry_after"),
    ("busy with negative wait", header(8, D, 0, 0, -1.0), "retry_after"),
    ("busy with str wait", header(8, D, 0, 0, "1"), "retry_after"),
    ("goodbye reason as bytes", header(9, b"bye"), "reason"),
    ("goodbye reason too long", header(9, "x" * 257), "reason"),
    ("trailer on a Have", Frame(msgpack.packb([3, D, 1]), b"junk"), "trailer"),
    ("piece without data", header(6, D, 0, 0), "data: 0"),
    ("bitfield spare bits set", header(2, D, 10, 1, b"\x00\x01"), "spare bits"),
    ("bitfield too short", header(2, D, 10, 1, b"\x00"), "have: 1"),
    ("bitfield too long", header(2, D, 10, 1, b"\x00\x00\x00"), "have: 3"),
    ("bitfield zero piece size", header(2, D, 10, 0, b""), "piece_size"),
    ("bitfield with too many pieces", header(2, D, MAX_PIECES + 1, 1, bytes(2049)), "16385 pieces"),
]


@pytest.mark.parametrize(("why", "frame", "match"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(why: str, frame: Frame, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode(frame)


def test_bitfield_of_empty_blob() -> None:
    empty = Bitfield(digest=D, size=0, piece_size=1 << 20, have=b"")
    assert roundtrip(empty) == empty


def test_local_construction_validates() -> None:
    with pytest.raises(ValueError):
        Have(digest=D, index=-1)
    with pytest.raises(TypeError):
        Request(digest=D, index=0, length="10")  # type: ignore[arg-type]


# ---- digests -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [D, D + D])
def test_digest_text_roundtrip(raw: bytes) -> None:
    text = format_digest(raw)
    assert text.startswith("sha256:" if len(raw) == 32 else "sha512:")
    assert parse_digest(text) == raw


@pytest.mark.parametrize(
    "text", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "sha512:" + "a" * 64]
)
def test_bad_digest_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_digest(text)
