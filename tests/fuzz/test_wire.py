"""Fuzz the peer wire protocol: random and mutated frames into a real node's P2P port.

The node runs in-process with a cached blob, on a real socket, its tracker unreachable (the
P2P port serves regardless). Each case opens a connection and sends bytes: a valid
handshake (and, on a node with a cluster secret, a valid Auth) most of the time, then
frames — well-formed messages with arbitrary fields, msgpack arrays of any shape, valid
frames with bits flipped, cut short or extended, wrong length prefixes — or raw bytes from
the first one. Whatever the node answers, it must eventually hang up (we half-close
first), log no ERROR, and, after every case, still serve a stranger the blob's first piece
byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.mesh.pieces import PiecePlan
from peer.mesh.wire.connection import NEED_DATA, PeerConnection
from peer.mesh.wire.framing import encode_frame
from peer.mesh.wire.messages import (
    MAX_PIECES,
    Bitfield,
    Busy,
    Cancel,
    Goodbye,
    Handshake,
    Have,
    Interested,
    Message,
    Piece,
    Request,
    encode,
    parse_digest,
)
from tests.fuzz.conftest import CASES, FUZZ, ErrorLog
from tests.helpers.background import Background, in_thread
from tests.helpers.node import Node, running_node
from tracker.auth import ClusterKeys

BLOB = hashlib.shake_256(b"wire fuzz").digest(3 * 1024 * 1024 + 5)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
PLAN = PiecePlan.for_size(len(BLOB))
SECRET = "fuzz-cluster-secret"


@dataclass
class Target:
    node: Background[Node]
    port: int
    keys: ClusterKeys | None


def _seed(data: Path) -> None:
    """Put BLOB in the node's cache directory, as a previous run would have."""
    hexpart = DIGEST.split(":")[1]
    shard = data / "cache" / "blobs" / "sha256" / hexpart[:2]
    shard.mkdir(parents=True)
    (shard / hexpart).write_bytes(BLOB)


@pytest.fixture(params=["open", "secret"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    secret = SECRET if request.param == "secret" else None
    _seed(tmp_path / "node")
    with in_thread(
        lambda: running_node(
            tmp_path / "node", tracker="http://127.0.0.1:9", node_id="fuzzed",
            cluster_secret=secret,
        )
    ) as node:  # fmt: skip
        keys = ClusterKeys.parse(secret) if secret else None
        yield Target(node, node.value.p2p_port, keys)


def _next(conn: PeerConnection, sock: socket.socket) -> object:
    while (event := conn.next_event()) is NEED_DATA:
        conn.receive_data(sock.recv(1 << 16))
    return event


def _first_piece(port: int, keys: ClusterKeys | None) -> bytes:
    """What an honest stranger gets for piece 0 (with the secret, if the node has one)."""
    conn = PeerConnection(keys=keys, dialer=True)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(conn.send(Handshake(peer_id="probe", max_requests=4, nonce=os.urandom(32))))
        assert isinstance(_next(conn, sock), Handshake)
        if keys is not None:
            sock.sendall(conn.send(conn.auth()))
            _next(conn, sock)  # their Auth
        raw = parse_digest(DIGEST)
        sock.sendall(conn.send(Request(digest=raw, index=0, length=PLAN.length(0))))
        reply = _next(conn, sock)
        assert isinstance(reply, Piece), reply
        return reply.data


# --- strategies ---------------------------------------------------------------------------

_digests = st.sampled_from([parse_digest(DIGEST), b"\0" * 32, b"\xff" * 64]) | st.binary(
    min_size=32, max_size=32
)
_index = st.integers(0, MAX_PIECES - 1)


@st.composite
def _bitfields(draw: st.DrawFn) -> Bitfield:
    piece_size = draw(st.sampled_from([PLAN.piece_size, 1, 1 << 24]) | st.integers(1, 1 << 24))
    count = draw(st.integers(0, 64))
    size = draw(
        st.integers(max(0, (count - 1) * piece_size + 1) if count else 0, count * piece_size)
    )
    count = -(-size // piece_size)
    have = bytearray(draw(st.binary(min_size=(count + 7) // 8, max_size=(count + 7) // 8)))
    if count % 8:
        have[-1] &= ~(0xFF >> (count % 8)) & 0xFF
    return Bitfield(digest=draw(_digests), size=size, piece_size=piece_size, have=bytes(have))


_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Interested, digest=_digests),
    st.builds(Have, digest=_digests, index=_index),
    _bitfields(),
    st.builds(
        Request, digest=_digests, index=st.integers(0, 4) | _index, offset=st.integers(0, 8),
        length=st.sampled_from([PLAN.length(0), 1]) | st.integers(1, 1 << 20),
    ),
    st.builds(Piece, digest=_digests, index=_index, offset=st.integers(0, 4),
              data=st.binary(min_size=1, max_size=64)),
    st.builds(Cancel, digest=_digests, index=_index, offset=st.integers(0, 4)),
    st.builds(Busy, digest=_digests, index=_index, offset=st.integers(0, 4),
              retry_after=st.floats(0, 3600)),
    st.builds(Goodbye, reason=st.text(max_size=40)),
    st.builds(Handshake, peer_id=st.sampled_from(["x", "fuzzed", "probe"]),
              max_requests=st.integers(1, 256)),
)  # fmt: skip
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.text(max_size=20), st.binary(max_size=40),
)  # fmt: skip
_anything = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
_shapes = st.builds(
    lambda tag, fields, trailer: encode_frame(msgpack.packb([tag, *fields]), trailer),
    st.integers(-1, 12), st.lists(_anything, max_size=6), st.binary(max_size=32),
)  # fmt: skip


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(encode(draw(_messages)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "extend", "length"]))
        if action == "flip" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut" and frame:
            del frame[draw(st.integers(0, len(frame) - 1)) :]
        elif action == "extend":
            frame += draw(st.binary(min_size=1, max_size=32))
        elif len(frame) >= 4:
            struct.pack_into(">I", frame, 0, draw(st.sampled_from([0, 1, 2, 0xFFFFFFFF])
                                                  | st.integers(0, 1 << 26)))  # fmt: skip
    return bytes(frame)


_frames = st.one_of(_messages.map(encode), _shapes, _mutated(), st.binary(min_size=1, max_size=64))


@st.composite
def _sessions(draw: st.DrawFn) -> tuple[bool, list[bytes]]:
    """(greet properly first?, the frames that follow)."""
    return draw(st.sampled_from([True, True, True, False])), draw(st.lists(_frames, max_size=6))


def _play(target: Target, greet: bool, frames: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
        try:
            if greet:
                conn = PeerConnection(keys=target.keys, dialer=True)
                hello = Handshake(peer_id="fuzzer", max_requests=8, nonce=os.urandom(32))
                sock.sendall(conn.send(hello))
                if target.keys is not None:
                    assert isinstance(_next(conn, sock), Handshake)
                    sock.sendall(conn.send(conn.auth()))
            sock.sendall(b"".join(frames))
            sock.shutdown(socket.SHUT_WR)
        except (OSError, AssertionError):
            return  # the node hung up on us: allowed
        try:
            while sock.recv(1 << 16):  # until the node hangs up too
                pass
        except ConnectionResetError:
            pass


def test_peer_wire_survives_hostile_frames(target: Target, error_log: ErrorLog) -> None:
    first = BLOB[: PLAN.length(0)]
    assert _first_piece(target.port, target.keys) == first

    @FUZZ
    @given(session=_sessions())
    def case(session: tuple[bool, list[bytes]]) -> None:
        CASES["peer wire"] += 1
        _play(target, *session)
        assert target.node.alive()
        assert _first_piece(target.port, target.keys) == first

    case()
