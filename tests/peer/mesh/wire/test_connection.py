"""PeerConnection: a scripted conversation fed whole, byte by byte and with trailing bytes,
then the rules one by one (illegal transitions, request books, EOF, fail-fast errors)."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest

from peer.errors import LocalProtocolError, RemoteProtocolError
from peer.mesh.wire.connection import NEED_DATA, Closed, PeerConnection
from peer.mesh.wire.framing import encode_frame
from peer.mesh.wire.messages import (
    PROTOCOL_VERSION,
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
)
from peer.mesh.wire.state import State
from tests.helpers.wirepair import DIGEST as D
from tests.helpers.wirepair import ConnectionPair, events_of

HELLO_A = Handshake(peer_id="alice", max_requests=2, nonce=b"a")
HELLO_B = Handshake(peer_id="bob", max_requests=4, nonce=b"b", mac=b"m" * 32)

# (sender, message): "a" or "b". Legal in this order.
SCRIPT: list[tuple[str, Message]] = [
    ("a", HELLO_A),
    ("b", HELLO_B),
    ("a", Interested(digest=D)),
    ("b", Bitfield(digest=D, size=10, piece_size=4, have=b"\xe0")),
    ("a", Request(digest=D, index=0, length=4)),
    ("a", Request(digest=D, index=1, length=4)),
    ("b", Piece(digest=D, index=0, data=b"abcd")),
    ("b", Busy(digest=D, index=1, retry_after=2.5)),
    ("b", Have(digest=D, index=2)),
    ("a", Request(digest=D, index=2, offset=1, length=1)),
    ("a", Cancel(digest=D, index=2, offset=1)),
    ("b", Request(digest=D, index=0, length=3)),
    ("a", Piece(digest=D, index=0, data=b"xyz")),
    ("a", Goodbye(reason="done")),
    ("b", Goodbye(reason="")),
]


def replay(pair: ConnectionPair, steps: list[tuple[str, Message]]) -> None:
    for who, message in steps:
        assert pair.send(pair.a if who == "a" else pair.b, message) == [message]


@pytest.mark.parametrize("step", range(len(SCRIPT)))
@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_script(step: int, mode: str) -> None:
    pair = ConnectionPair()
    replay(pair, SCRIPT[:step])
    who, message = SCRIPT[step]
    sender = pair.a if who == "a" else pair.b
    receiver = pair.other(sender)
    data = sender.send(message)
    if mode == "whole":
        receiver.receive_data(data)
    elif mode == "bytewise":
        for i in range(len(data) - 1):
            receiver.receive_data(data[i : i + 1])
            assert receiver.next_event() is NEED_DATA
        receiver.receive_data(data[-1:])
    else:  # the start of a further frame rides along and stays buffered
        receiver.receive_data(data + encode(Goodbye(reason="later"))[:5])
    assert receiver.next_event() == message
    assert receiver.next_event() is NEED_DATA


def test_script_books_and_states() -> None:
    pair = ConnectionPair()
    replay(pair, SCRIPT[:10])
    assert (pair.a.outstanding, pair.a.inflight_bytes, pair.b.peer_outstanding) == (1, 1, 1)
    assert pair.a.request_slots == 3  # min(our cap 8, bob's 4) minus one outstanding
    replay(pair, SCRIPT[10:12])
    assert (pair.a.outstanding, pair.a.inflight_bytes, pair.b.peer_outstanding) == (0, 0, 0)
    assert pair.a.peer_outstanding == 1
    replay(pair, SCRIPT[12:])
    assert pair.a.our_state is State.CLOSED
    assert pair.a.their_state is State.CLOSED
    assert pair.close(pair.a) == [Closed(clean=True)]
    assert pair.b.next_event() == Closed(clean=True)  # and again


def test_eof_without_goodbye_is_unclean_and_repeats() -> None:
    pair = ConnectionPair()
    replay(pair, SCRIPT[:2])
    assert pair.close(pair.b) == [Closed(clean=False)]
    assert pair.a.next_event() == Closed(clean=False)
    pair.a.receive_data(b"")  # a second EOF is harmless
    assert pair.a.their_state is State.CLOSED


def test_eof_before_handshake_closes() -> None:
    conn = PeerConnection()
    conn.receive_data(b"")
    assert conn.next_event() == Closed(clean=False)


def test_goodbye_may_refuse_before_handshake() -> None:
    pair = ConnectionPair()
    assert pair.send(pair.a, Goodbye(reason="full")) == [Goodbye(reason="full")]
    assert pair.a.our_state is State.CLOSED


def test_version_negotiates_down_and_too_old_is_refused() -> None:
    assert PeerConnection().version is None
    pair = ConnectionPair()
    pair.send(pair.b, Handshake(version=7, peer_id="future", max_requests=1))
    assert pair.a.version == PROTOCOL_VERSION == 2
    v1 = ConnectionPair()
    v1.send(v1.b, Handshake(version=1, peer_id="past", max_requests=1))
    assert v1.a.version == 1  # still spoken: no Declined, v1 piece sizes (swarm.py)
    old = PeerConnection()
    old.receive_data(encode(Handshake(version=0, peer_id="past", max_requests=1)))
    with pytest.raises(RemoteProtocolError, match="version 0"):
        old.next_event()


# ---- illegal receives: RemoteProtocolError, then ERROR ---------------------------------


def opened(max_requests: int = 2) -> PeerConnection:
    """A connection that sent HELLO_A-like handshake and received HELLO_B."""
    conn = PeerConnection()
    conn.send(Handshake(peer_id="alice", max_requests=max_requests))
    conn.receive_data(encode(HELLO_B))
    assert conn.next_event() == HELLO_B
    return conn


def fresh() -> PeerConnection:
    return PeerConnection()


def silent() -> PeerConnection:
    """Received their handshake but has not sent its own."""
    conn = PeerConnection()
    conn.receive_data(encode(HELLO_B))
    assert conn.next_event() == HELLO_B
    return conn


REQ0 = Request(digest=D, index=0, length=4)
REQ1 = Request(digest=D, index=1, length=4)
REQ2 = Request(digest=D, index=2, length=4)
BAD_RECEIVES: list[tuple[str, Callable[[], PeerConnection], list[Message], str]] = [
    ("message before handshake", fresh, [Have(digest=D, index=0)], "other in HANDSHAKE"),
    ("second handshake", opened, [HELLO_B], "handshake in OPEN"),
    ("message after goodbye", opened, [Goodbye(), Have(digest=D, index=0)], "in CLOSED"),
    ("unrequested piece", opened, [Piece(digest=D, index=0, data=b"x")], "unrequested Piece"),
    ("unrequested busy", opened, [Busy(digest=D, index=0, retry_after=1)], "unrequested Busy"),
    ("request over our limit", opened, [REQ0, REQ1, REQ2], "more than 2 requests"),
    ("duplicate request", opened, [REQ0, REQ0], "duplicate request"),
    ("request before our handshake", silent, [REQ0], "more than 0 requests"),
]


@pytest.mark.parametrize(
    ("why", "make", "messages", "match"), BAD_RECEIVES, ids=[c[0] for c in BAD_RECEIVES]
)
def test_bad_receive(
    why: str, make: Callable[[], PeerConnection], messages: list[Message], match: str
) -> None:
    conn = make()
    conn.receive_data(b"".join(encode(m) for m in messages))
    with pytest.raises(RemoteProtocolError, match=match):
        events_of(conn)
    assert conn.our_state is State.ERROR
    assert conn.their_state is State.ERROR
    assert_fails_fast(conn)


def assert_fails_fast(conn: PeerConnection) -> None:
    with pytest.raises(RemoteProtocolError, match="ERROR state"):
        conn.next_event()
    with pytest.raises(RemoteProtocolError, match="ERROR state"):
        conn.receive_data(b"more")
    with pytest.raises(LocalProtocolError, match="ERROR state"):
        conn.send(Goodbye())


def test_piece_of_wrong_length_is_remote_error() -> None:
    conn = opened()
    conn.send(REQ0)
    conn.receive_data(encode(Piece(digest=D, index=0, data=b"abc")))
    with pytest.raises(RemoteProtocolError, match="piece of 3 B, asked 4"):
        conn.next_event()
    assert_fails_fast(conn)


def test_oversized_frame_is_remote_error() -> None:
    conn = PeerConnection(max_frame=64)
    conn.receive_data(encode(Goodbye(reason="x" * 100))[:4])
    with pytest.raises(RemoteProtocolError, match="exceeds limit 64"):
        conn.next_event()
    assert_fails_fast(conn)


def test_garbage_frame_is_remote_error() -> None:
    conn = PeerConnection()
    conn.receive_data(b"\x00\x00\x00\x03\x00\x01\xc1")
    with pytest.raises(RemoteProtocolError, match="undecodable"):
        conn.next_event()
    assert_fails_fast(conn)


def test_eof_inside_a_frame_is_remote_error() -> None:
    conn = PeerConnection()
    conn.receive_data(encode(HELLO_B)[:-1])
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="EOF inside a frame"):
        conn.next_event()
    assert_fails_fast(conn)


def test_data_after_eof_is_remote_error() -> None:
    conn = PeerConnection()
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="after EOF"):
        conn.receive_data(b"x")
    assert_fails_fast(conn)


# ---- illegal sends: LocalProtocolError, then ERROR -------------------------------------

BAD_SENDS: list[tuple[str, Callable[[], PeerConnection], list[Message], str]] = [
    ("message before handshake", fresh, [Have(digest=D, index=0)], "Have in State.HANDSHAKE"),
    ("second handshake", opened, [HELLO_A], "Handshake in State.OPEN"),
    ("message after goodbye", opened, [Goodbye(), Interested(digest=D)], "in State.CLOSED"),
    ("request before their handshake", lambda: PeerConnection(), [HELLO_A, REQ0], "no request"),
    ("duplicate request", opened, [REQ0, REQ0], "already requested"),
    ("reply nobody asked for", opened, [Piece(digest=D, index=0, data=b"x")], "nobody asked"),
    ("busy nobody asked for", opened, [Busy(digest=D, index=0, retry_after=0)], "nobody asked"),
]


@pytest.mark.parametrize(
    ("why", "make", "messages", "match"), BAD_SENDS, ids=[c[0] for c in BAD_SENDS]
)
def test_bad_send(
    why: str, make: Callable[[], PeerConnection], messages: list[Message], match: str
) -> None:
    conn = make()
    for message in messages[:-1]:
        conn.send(message)
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(messages[-1])
    assert conn.our_state is State.ERROR
    assert_fails_fast(conn)


def test_request_cap_is_min_of_ours_and_theirs() -> None:
    pair = ConnectionPair(max_outstanding=3)
    pair.handshake(max_requests=2)
    for i in range(2):
        pair.send(pair.a, Request(digest=D, index=i, length=1))
    assert pair.a.request_slots == 0
    with pytest.raises(LocalProtocolError, match="no request slot"):
        pair.a.send(Request(digest=D, index=2, length=1))


def test_inflight_bytes_cap() -> None:
    pair = ConnectionPair(max_inflight_bytes=10)
    pair.handshake()
    pair.send(pair.a, Request(digest=D, index=0, length=6))
    with pytest.raises(LocalProtocolError, match="more than 10 B in flight"):
        pair.a.send(Request(digest=D, index=1, length=5))


def test_piece_of_wrong_length_is_local_error() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.a, REQ0)
    with pytest.raises(LocalProtocolError, match="piece of 5 B, asked 4"):
        pair.b.send(Piece(digest=D, index=0, data=b"12345"))


def test_send_failed_poisons_the_connection() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.a.send_failed()
    assert pair.a.our_state is State.ERROR
    assert_fails_fast(pair.a)


# ---- cancel races ----------------------------------------------------------------------


def test_reply_crossing_our_cancel_is_dropped() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.a, REQ0)
    pair.send(pair.a, REQ1)
    cancel = pair.a.send(Cancel(digest=D, index=0))  # not delivered yet: it crosses...
    late = pair.b.send(Piece(digest=D, index=0, data=b"abcd"))  # ...this piece
    busy = pair.b.send(Busy(digest=D, index=1, retry_after=1))
    pair.a.receive_data(late + busy)
    assert events_of(pair.a) == [Busy(digest=D, index=1, retry_after=1)]
    pair.b.receive_data(cancel)
    assert events_of(pair.b) == [Cancel(digest=D, index=0)]  # b answered already: no-op
    assert pair.b.peer_outstanding == 0


def test_reply_to_a_cancelled_request_is_swallowed() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.a, REQ0)
    pair.send(pair.a, Cancel(digest=D, index=0))
    assert pair.b.peer_outstanding == 0
    assert pair.b.send(Piece(digest=D, index=0, data=b"abcd")) == b""
    assert pair.b.our_state is State.OPEN


def test_cancel_after_the_piece_arrived_sends_nothing() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.a, REQ0)
    pair.send(pair.b, Piece(digest=D, index=0, data=b"abcd"))
    assert pair.a.send(Cancel(digest=D, index=0)) == b""


def test_rerequest_after_cancel_tolerates_both_replies() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.a, REQ0)
    pair.send(pair.a, Cancel(digest=D, index=0))
    pair.send(pair.a, REQ0)  # the same key again
    piece = Piece(digest=D, index=0, data=b"abcd")
    assert pair.send(pair.b, piece) == [piece]
    assert pair.b.send(piece) == b""  # a second, stale reply is swallowed at the source
    assert pair.a.outstanding == 0


MALFORMED_WIRE = [
    ("bad msgpack", b"\x00\x00\x00\x03\x00\x01\xc1"),
    ("wrong type", encode_frame(msgpack.packb([1, 1, 7, 4, b"", None]))),
    ("unknown tag", encode_frame(msgpack.packb([42]))),
    ("oversized length", b"\x7f\xff\xff\xff\x00\x00"),
]


@pytest.mark.parametrize(("why", "wire"), MALFORMED_WIRE, ids=[m[0] for m in MALFORMED_WIRE])
def test_malformed_frames_fed_byte_by_byte(why: str, wire: bytes) -> None:
    conn = PeerConnection()
    with pytest.raises(RemoteProtocolError):  # noqa: PT012  (the error comes mid-feed)
        for i in range(len(wire)):
            conn.receive_data(wire[i : i + 1])
            assert conn.next_event() is NEED_DATA
    assert conn.their_state is State.ERROR
    assert_fails_fast(conn)
