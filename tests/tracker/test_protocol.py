"""Layer 1: the tracker protocol codec — round trips, truncations, malformed tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker import protocol as p
from tracker.asgi import BodyBuffer
from tracker.errors import BadMessage, BadRequest, BodyTooLarge, UnsupportedVersion

D1 = "sha256:" + "a" * 64
D2 = "sha512:" + "b" * 128
S = b"s" * 16

MESSAGES: list[p.Message] = [
    p.Announce(peer_id="node-1", session=S, host="10.0.0.1", port=5051),
    p.Announce(
        peer_id="n.2_x",
        session=b"\x00" * 32,
        host="fe80::1%eth0",
        port=65535,
        held=(p.BlobHeld(D1, 0), p.BlobHeld(D2, p.MAX_SIZE)),
        in_progress=(p.BlobInProgress(D1, 100, 0), p.BlobInProgress(D2, 100, 100)),
        upload_slots=8,
        load=3,
        bytes_served=1 << 40,
        bytes_from_origin=(1 << 64) - 1,
        bytes_from_peers=7,
    ),
    p.AnnounceReply(interval=30.0, peer_ttl=90.0, draining=True),
    p.Leave(peer_id="node-1", session=S),
    p.Ack(),
    p.Lookup(digest=D1, peer_id="node-1", limit=p.MAX_LOOKUP_LIMIT),
    p.LookupReply(digest=D2, size=0),
    p.LookupReply(
        digest=D1,
        size=10,
        peers=(
            p.PeerAddr(peer_id="a", host="h", port=1, complete=True, bytes_held=10),
            p.PeerAddr(
                peer_id="b", host="h2", port=2, complete=False, bytes_held=3, load=1, upload_slots=4
            ),
        ),
    ),
    p.PieceHashes(digest=D1, size=0, piece_size=p.MIN_PIECE_SIZE, hashes=(), peer_id="n"),
    p.PieceHashes(
        digest=D1,
        size=(1 << 20) + 1,
        piece_size=1 << 20,
        hashes=(b"\x01" * 32, b"\x02" * 32),
        peer_id="n",
    ),
    p.PiecesPutReply(stored=False, conflict=True),
    p.PiecesQuery(digest=D2),
    p.TagQuery(registry="docker.io", repository="library/alpine", tag="3.20", accept=""),
    p.TagRecord(
        registry="registry-1.docker.io:443",
        repository="a/b-c/d__e",
        tag="latest",
        accept="application/vnd.oci.image.index.v1+json,application/json",
        digest=D1,
        media_type="application/vnd.oci.image.index.v1+json",
        size=1234,
        resolved_at=1_700_000_000.25,
    ),
    p.TagPutReply(stored=True),
    # A partial record: b"" marks a piece whose hash is not known yet.
    p.PieceHashes(
        digest=D2,
        size=3 * p.MIN_PIECE_SIZE,
        piece_size=p.MIN_PIECE_SIZE,
        hashes=(b"", b"\x03" * 32, b""),
        peer_id="n",
    ),
    p.PieceHashes(digest=D1, size=1, piece_size=p.MIN_PIECE_SIZE, hashes=(b"",), peer_id="n"),
    p.LeaseRequest(digest=D1, piece_index=p.MAX_PIECE_INDEX, peer_id="n", session=S, ttl=0.0),
    p.LeaseReply(granted=False, holder="other", expires_at=1_700_000_010.5),
    p.LeaseReply(granted=False, holder="other", expires_at=1_700_000_010.5, capped=True),
    p.LeaseRequest(digest=D1, piece_index=7, peer_id="n", session=S, ttl=30.0, count=64),
    p.LeaseReply(granted=True, holder="n", expires_at=1_700_000_010.5, count=12),
    p.LeaseRequest(digest=D1, piece_index=3, peer_id="n", session=S, ttl=30.0, insist=True),
]


def test_lease_request_insist_is_optional_both_ways() -> None:
    """Sent only when true; absent reads as false; anything but a boolean is refused."""
    plain = p.LeaseRequest(digest=D1, piece_index=3, peer_id="n", session=S, ttl=30.0)
    old = msgpack.unpackb(p.encode(plain))
    assert "insist" not in old  # insist=False is left out: an older tracker's bytes
    assert p.decode(p.LeaseRequest, msgpack.packb(old)) == plain
    insisting = msgpack.unpackb(p.encode(dataclasses.replace(plain, insist=True)))
    assert insisting == {**old, "insist": True}
    for bad in (1, 0, "true", None, b"\x01"):
        with pytest.raises(BadMessage, match="insist"):
            p.decode(p.LeaseRequest, msgpack.packb({**old, "insist": bad}))


def test_lease_reply_capped_is_optional_both_ways() -> None:
    """Trackers and peers from before the cap: the bytes they know, in both directions."""
    plain = p.LeaseReply(granted=False, holder="other", expires_at=1_700_000_010.5)
    old = {"v": 1, "t": "lease_reply", "granted": False, "holder": "other",
           "expires_at": 1_700_000_010.5}  # fmt: skip
    assert msgpack.unpackb(p.encode(plain)) == old  # capped=False is left out
    assert p.decode(p.LeaseReply, msgpack.packb(old)) == plain  # absent: not capped
    capped = p.encode(dataclasses.replace(plain, capped=True))
    assert msgpack.unpackb(capped)["capped"] is True
    with pytest.raises(BadMessage, match="capped"):
        p.decode(p.LeaseReply, msgpack.packb({**old, "capped": 1}))


def ids(m: object) -> str:
    return type(m).__name__


@pytest.mark.parametrize("message", MESSAGES, ids=ids)
def test_round_trip(message: p.Message) -> None:
    assert p.decode(type(message), p.encode(message)) == message


@pytest.mark.parametrize("message", MESSAGES, ids=ids)
def test_every_truncation_is_refused(message: p.Message) -> None:
    body = p.encode(message)
    for end in range(len(body)):
        with pytest.raises(BadMessage):
            p.decode(type(message), body[:end])


@pytest.mark.parametrize("message", MESSAGES, ids=ids)
def test_trailing_bytes_are_refused(message: p.Message) -> None:
    with pytest.raises(BadMessage):
        p.decode(type(message), p.encode(message) + b"\xc0")


@pytest.mark.parametrize("message", MESSAGES, ids=ids)
def test_wrong_kind_is_refused(message: p.Message) -> None:
    other = p.Ack if not isinstance(message, p.Ack) else p.Leave
    with pytest.raises(BadMessage, match="expected"):
        p.decode(other, p.encode(message))


def test_encoding_is_a_versioned_map() -> None:
    raw = msgpack.unpackb(p.encode(p.Leave(peer_id="x", session=S)))
    assert raw == {"v": p.PROTOCOL_VERSION, "t": "leave", "peer_id": "x", "session": S}


def test_unknown_extra_keys_are_ignored() -> None:
    raw = msgpack.unpackb(p.encode(p.PiecesQuery(digest=D1)))
    raw["future_field"] = [1, 2, 3]
    assert p.decode(p.PiecesQuery, msgpack.packb(raw)) == p.PiecesQuery(digest=D1)


def test_other_version_is_unsupported_and_still_a_bad_request() -> None:
    raw = msgpack.unpackb(p.encode(p.Ack()))
    raw["v"] = p.PROTOCOL_VERSION + 1
    with pytest.raises(UnsupportedVersion) as info:
        p.decode(p.Ack, msgpack.packb(raw))
    assert isinstance(info.value, BadRequest)
    assert info.value.status_hint == 400


def announce_fields(**changes: Any) -> bytes:
    raw = msgpack.unpackb(p.encode(MESSAGES[1]))
    for key, value in changes.items():
        if value is KeyError:
            del raw[key]
        else:
            raw[key] = value
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


MALFORMED_ANNOUNCES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not msgpack", b"\xc1"),
    ("not a map", msgpack.packb([1, 2])),
    ("int keys", msgpack.packb({1: 2})),
    ("missing field", announce_fields(host=KeyError)),
    ("missing version", announce_fields(v=KeyError)),
    ("version is a string", announce_fields(v="1")),
    ("port is a bool", announce_fields(port=True)),
    ("port zero", announce_fields(port=0)),
    ("port too big", announce_fields(port=65536)),
    ("port is a float", announce_fields(port=80.0)),
    ("negative load", announce_fields(load=-1)),
    ("session is text", announce_fields(session="s" * 16)),
    ("session too short", announce_fields(session=b"1234567")),
    ("session too long", announce_fields(session=b"x" * 33)),
    ("empty peer id", announce_fields(peer_id="")),
    ("peer id with slash", announce_fields(peer_id="a/b")),
    ("peer id too long", announce_fields(peer_id="a" * 65)),
    ("host with space", announce_fields(host="a b")),
    ("held not a list", announce_fields(held={"a": 1})),
    ("held row too short", announce_fields(held=[[D1]])),
    ("held row too long", announce_fields(held=[[D1, 1, 2]])),
    ("held row is a map", announce_fields(held=[{"digest": D1, "size": 1}])),
    ("held digest upper case", announce_fields(held=[[D1.upper(), 1]])),
    ("held digest md5", announce_fields(held=[["md5:" + "a" * 32, 1]])),
    ("held digest short", announce_fields(held=[[D1[:-1], 1]])),
    ("held digest with newline", announce_fields(held=[[D1 + "\n", 1]])),
    ("held digest is bytes", announce_fields(held=[[D1.encode(), 1]])),
    ("held size negative", announce_fields(held=[[D1, -1]])),
    ("held size too big", announce_fields(held=[[D1, p.MAX_SIZE + 1]])),
    ("held size is bool", announce_fields(held=[[D1, False]])),
    ("held over cap", announce_fields(held=[[D1, 1]] * (p.MAX_HELD + 1))),
    ("in progress held > size", announce_fields(in_progress=[[D1, 10, 11]])),
    ("in progress held negative", announce_fields(in_progress=[[D1, 10, -1]])),
    ("in progress over cap", announce_fields(in_progress=[[D1, 1, 0]] * (p.MAX_IN_PROGRESS + 1))),
    ("counter negative", announce_fields(bytes_served=-5)),
    ("string over msgpack cap", announce_fields(host="h" * 5000)),
    ("held digest is a list", announce_fields(held=[[[D1], 1]])),
    ("ext type", announce_fields(host=msgpack.ExtType(1, b"x"))),
    ("over body cap", b"\x00" * (p.MAX_BODY + 1)),
]


@pytest.mark.parametrize(
    ("name", "body"), MALFORMED_ANNOUNCES, ids=[n for n, _ in MALFORMED_ANNOUNCES]
)
def test_malformed_announces_raise_bad_message(name: str, body: bytes) -> None:
    with pytest.raises(BadMessage):
        p.decode(p.Announce, body)


def pieces(**changes: Any) -> bytes:
    raw = msgpack.unpackb(p.encode(MESSAGES[9]))
    raw.update(changes)
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "body",
    [
        pieces(hashes=[b"\x01" * 32]),  # one piece short
        pieces(hashes=[b"\x01" * 32] * 3),  # one piece too many
        pieces(hashes=[b"\x01" * 31, b"\x02" * 32]),  # not a SHA-256
        pieces(hashes=[b"\x01", b""]),  # neither a SHA-256 nor unknown
        pieces(hashes=[b"\x01" * 33, b""]),  # too long for a SHA-256
        pieces(hashes=[b""]),  # holes still count: one piece short
        pieces(hashes=[None, b"\x02" * 32]),  # nil is not "unknown"
        pieces(hashes=["ab" * 32, "cd" * 32]),  # hex text, not bytes
        pieces(piece_size=p.MIN_PIECE_SIZE - 1),
        pieces(piece_size=p.MAX_PIECE_SIZE + 1),
    ],
    ids=[
        "short",
        "long",
        "31 bytes",
        "1 byte",
        "33 bytes",
        "short with holes",
        "nil",
        "text",
        "tiny pieces",
        "huge pieces",
    ],
)
def test_malformed_piece_hashes(body: bytes) -> None:
    with pytest.raises(BadMessage):
        p.decode(p.PieceHashes, body)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (p.Lookup, "limit", 0),
        (p.Lookup, "limit", p.MAX_LOOKUP_LIMIT + 1),
        (p.LeaseRequest, "ttl", p.MAX_LEASE_TTL + 1),
        (p.LeaseRequest, "ttl", float("nan")),
        (p.LeaseRequest, "ttl", -1.0),
        (p.LeaseRequest, "piece_index", p.MAX_PIECE_INDEX + 1),
        (p.TagRecord, "repository", "UpperCase/repo"),
        (p.TagRecord, "repository", "a//b"),
        (p.TagRecord, "tag", ".hidden"),
        (p.TagRecord, "tag", "t" * 129),
        (p.TagRecord, "media_type", "not a media type"),
        (p.TagRecord, "accept", "caf\u00e9"),
        (p.TagRecord, "resolved_at", float("inf")),
        (p.AnnounceReply, "draining", 1),
    ],
)
def test_out_of_range_fields(cls: type[p.Message], field: str, value: object) -> None:
    message = next(m for m in MESSAGES if type(m) is cls)
    raw = msgpack.unpackb(p.encode(message))
    raw[field] = value
    with pytest.raises(BadMessage, match=field):
        p.decode(cls, msgpack.packb(raw, use_bin_type=True))


digests = st.builds(
    lambda algorithm, data: f"{algorithm}:{data.hex()}",
    st.sampled_from(["sha256", "sha512"]),
    st.binary(min_size=32, max_size=32),
).map(lambda d: d if d.startswith("sha256") else d + "0" * 64)
sizes = st.integers(min_value=0, max_value=p.MAX_SIZE)


@st.composite
def in_progress(draw: st.DrawFn) -> p.BlobInProgress:
    size = draw(sizes)
    return p.BlobInProgress(draw(digests), size, draw(st.integers(0, size)))


@given(
    held=st.lists(st.builds(p.BlobHeld, digests, sizes), max_size=20),
    partial=st.lists(in_progress(), max_size=5),
    load=st.integers(0, 1 << 16),
)
def test_announce_round_trip_property(
    held: list[p.BlobHeld], partial: list[p.BlobInProgress], load: int
) -> None:
    message = p.Announce(
        peer_id="n",
        session=S,
        host="h",
        port=1,
        held=tuple(held),
        in_progress=tuple(partial),
        load=load,
    )
    assert p.decode(p.Announce, p.encode(message)) == message


@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_bad_message(body: bytes) -> None:
    for cls in (p.Announce, p.Lookup, p.TagRecord, p.PieceHashes):
        try:
            p.decode(cls, body)
        except BadMessage:
            pass


# --- BodyBuffer (the cap enforced while reading) ---------------------------------------


@pytest.mark.parametrize("step", [None, 1, 7])
def test_body_buffer_whole_or_chunked(step: int | None) -> None:
    body = p.encode(MESSAGES[1])
    buffer = BodyBuffer(len(body))
    chunks = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    for chunk in chunks:
        buffer.feed(chunk)
    assert buffer.getvalue() == body
    assert p.decode(p.Announce, buffer.getvalue()) == MESSAGES[1]


def test_body_buffer_refuses_one_byte_over_when_fed_byte_by_byte() -> None:
    buffer = BodyBuffer(10)
    for _ in range(10):
        buffer.feed(b"x")
    with pytest.raises(BodyTooLarge):
        buffer.feed(b"x")
    assert buffer.getvalue() == b""
