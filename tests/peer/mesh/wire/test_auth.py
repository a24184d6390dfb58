"""Cluster authentication of peer links, sans-IO: the MAC, the Auth message, Rule 5 of the
state table, and the attacks it must stop (wrong secret, no secret, reflection, relay)."""

from __future__ import annotations

import hashlib
import hmac

import msgpack
import pytest

from peer.errors import LocalProtocolError, RemoteProtocolError
from peer.mesh.wire.auth import make_auth, verify_auth
from peer.mesh.wire.connection import NEED_DATA, PeerConnection
from peer.mesh.wire.framing import Frame, FrameBuffer
from peer.mesh.wire.messages import (
    Auth,
    Bitfield,
    Goodbye,
    Handshake,
    Interested,
    Message,
    Piece,
    Request,
    decode,
    encode,
)
from peer.mesh.wire.state import Kind, State, next_state
from tests.helpers.wirepair import DIGEST as D
from tests.helpers.wirepair import events_of
from tracker.auth import ClusterKeys

KEYS = ClusterKeys.parse("correct horse battery staple")
OTHER = ClusterKeys.parse("another cluster's secret!!")
NA = bytes(range(32))
NB = bytes(range(32, 64))
HELLO_A = Handshake(peer_id="alice", max_requests=4, nonce=NA)
HELLO_B = Handshake(peer_id="bob", max_requests=4, nonce=NB)


def pair(
    a_keys: ClusterKeys | None = KEYS, b_keys: ClusterKeys | None = KEYS
) -> tuple[PeerConnection, PeerConnection]:
    """alice dialled bob."""
    return PeerConnection(keys=a_keys, dialer=True), PeerConnection(keys=b_keys, dialer=False)


def deliver(sender: PeerConnection, receiver: PeerConnection, message: Message) -> list[object]:
    receiver.receive_data(sender.send(message))
    return list(events_of(receiver))


def handshakes(a: PeerConnection, b: PeerConnection) -> None:
    assert deliver(a, b, HELLO_A) == [HELLO_A]
    assert deliver(b, a, HELLO_B) == [HELLO_B]


def authenticate(a: PeerConnection, b: PeerConnection) -> None:
    handshakes(a, b)
    auth_a, auth_b = a.auth(), b.auth()
    assert deliver(a, b, auth_a) == [auth_a]
    assert deliver(b, a, auth_b) == [auth_b]


# ---- the MAC -----------------------------------------------------------------------------


def test_mac_is_hmac_sha256_over_the_framed_fields() -> None:
    """A fixed vector, written out by hand: another implementation can check itself here."""
    secret = b"correct horse battery staple"
    parts = [b"dialer", b"alice", b"bob", NA, NB]
    message = b"shoal-link-auth-v1" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    expected = hmac.new(secret, message, hashlib.sha256).digest()
    assert make_auth(KEYS, ours=HELLO_A, theirs=HELLO_B, dialer=True).mac == expected


@pytest.mark.parametrize(
    ("ours", "theirs", "dialer"),
    [
        (HELLO_A, HELLO_B, False),  # the other role
        (HELLO_B, HELLO_A, True),  # the other direction
        (HELLO_A, Handshake(peer_id="bob", max_requests=4, nonce=NA[::-1]), True),
        (HELLO_A, Handshake(peer_id="bobby", max_requests=4, nonce=NB), True),
    ],
)
def test_every_field_changes_the_mac(ours: Handshake, theirs: Handshake, dialer: bool) -> None:
    base = make_auth(KEYS, ours=HELLO_A, theirs=HELLO_B, dialer=True)
    assert make_auth(KEYS, ours=ours, theirs=theirs, dialer=dialer) != base


def test_auth_message_codec() -> None:
    auth = Auth(mac=b"m" * 32)
    buffer = FrameBuffer(max_frame=1024)
    buffer.feed(encode(auth))
    frame = buffer.next_frame()
    assert frame is not None
    assert decode(frame) == auth
    with pytest.raises(ValueError):
        Auth(mac=b"short")
    for mac in (b"x" * 31, b"x" * 33, "x" * 32):
        with pytest.raises(RemoteProtocolError, match="mac"):
            decode(Frame(msgpack.packb([10, mac])))


# ---- Rule 5: the table -------------------------------------------------------------------

TABLE = [
    (State.HANDSHAKE, Kind.HANDSHAKE, False, State.OPEN),
    (State.HANDSHAKE, Kind.HANDSHAKE, True, State.AUTH),
    (State.AUTH, Kind.AUTH, True, State.OPEN),
    (State.AUTH, Kind.OTHER, True, None),
    (State.AUTH, Kind.HANDSHAKE, True, None),
    (State.AUTH, Kind.GOODBYE, True, State.CLOSED),
    (State.AUTH, Kind.EOF, True, State.CLOSED),
    (State.OPEN, Kind.AUTH, True, None),
    (State.OPEN, Kind.AUTH, False, None),
    (State.HANDSHAKE, Kind.AUTH, True, None),
    (State.OPEN, Kind.OTHER, True, State.OPEN),
]


@pytest.mark.parametrize(("state", "kind", "authenticated", "after"), TABLE)
def test_table(state: State, kind: Kind, authenticated: bool, after: State | None) -> None:
    assert next_state(state, kind, authenticated=authenticated) == after


# ---- the conversation --------------------------------------------------------------------


def test_authenticated_link_opens_and_serves() -> None:
    a, b = pair()
    handshakes(a, b)
    assert a.their_state is State.AUTH
    assert not a.ready
    assert a.request_slots == 0
    authenticate_rest = (a.auth(), b.auth())
    assert deliver(a, b, authenticate_rest[0]) == [authenticate_rest[0]]
    assert b.authenticated
    assert b.ready
    assert deliver(b, a, authenticate_rest[1]) == [authenticate_rest[1]]
    assert a.authenticated
    assert a.request_slots == 4
    request = Request(digest=D, index=0, length=4)
    assert deliver(a, b, request) == [request]
    assert deliver(b, a, Piece(digest=D, index=0, data=b"abcd"))[0] == Piece(
        digest=D, index=0, data=b"abcd"
    )


def test_auth_may_cross_on_the_wire() -> None:
    """Both Auth messages in flight at once (each sent before the other arrives)."""
    a, b = pair()
    handshakes(a, b)
    data_a, data_b = a.send(a.auth()), b.send(b.auth())
    b.receive_data(data_a)
    a.receive_data(data_b)
    assert isinstance(events_of(a)[0], Auth)
    assert isinstance(events_of(b)[0], Auth)
    assert a.authenticated
    assert b.authenticated


def test_rotation_overlap_interoperates() -> None:
    """Rule 2 of tracker.auth: old,new ~ old and new,old ~ old,new and new ~ new,old."""
    old, new = "old-secret-0123456789", "new-secret-0123456789"
    steps = [(f"{old}", f"{old},{new}"), (f"{old},{new}", f"{new},{old}"), (f"{new},{old}", new)]
    for left, right in steps:
        a, b = pair(ClusterKeys.parse(left), ClusterKeys.parse(right))
        authenticate(a, b)
        assert a.authenticated
        assert b.authenticated


def test_wrong_secret_is_refused() -> None:
    a, b = pair(KEYS, OTHER)
    handshakes(a, b)
    b.receive_data(a.send(a.auth()))
    with pytest.raises(RemoteProtocolError, match="another --cluster-secret"):
        b.next_event()
    assert b.their_state is State.ERROR


def test_node_without_secret_gets_nothing() -> None:
    """It may send anything; nothing gets past its handshake, and we send it nothing."""
    a, b = pair(KEYS, None)  # b has no secret
    handshakes(a, b)
    assert b.ready  # b thinks the link is open...
    for message in (Interested(digest=D), Request(digest=D, index=0, length=4)):
        receiver = PeerConnection(keys=KEYS, dialer=True)
        receiver.send(HELLO_A)
        receiver.receive_data(encode(HELLO_B) + encode(message))
        assert receiver.next_event() == HELLO_B
        with pytest.raises(RemoteProtocolError, match="instead of authenticating"):
            receiver.next_event()
        assert receiver.peer_outstanding == 0
    # ... and refuses our Auth with a clear reason
    with pytest.raises(RemoteProtocolError, match="this node has none"):
        deliver(a, b, a.auth())


def test_we_send_nothing_before_they_authenticate() -> None:
    """Our Auth is out, theirs has not come: no Bitfield, no Interested may leave."""
    a, b = pair()
    handshakes(a, b)
    a.send(a.auth())
    assert a.our_state is State.OPEN
    assert a.their_state is State.AUTH
    bitfield = Bitfield(digest=D, size=8, piece_size=4, have=b"\xc0")
    with pytest.raises(LocalProtocolError, match="before the peer has authenticated"):
        a.send(bitfield)
    a2, b2 = pair()
    handshakes(a2, b2)
    a2.send(a2.auth())
    with pytest.raises(LocalProtocolError, match="before the peer has authenticated"):
        a2.send(Interested(digest=D))
    a3, b3 = pair()
    handshakes(a3, b3)
    assert a3.send(Goodbye(reason="bye"))  # refusing is always allowed


def test_our_nonce_must_be_long_enough() -> None:
    conn = PeerConnection(keys=KEYS)
    with pytest.raises(LocalProtocolError, match="nonce"):
        conn.send(Handshake(peer_id="alice", max_requests=1, nonce=b"short"))


def test_their_nonce_must_be_long_enough() -> None:
    a, _b = pair()
    weak = Handshake(peer_id="bob", max_requests=4, nonce=b"n" * 15)
    a.send(HELLO_A)
    a.receive_data(encode(weak))
    assert a.next_event() == weak
    forged = make_auth(KEYS, ours=weak, theirs=HELLO_A, dialer=False)
    a.receive_data(encode(forged))
    with pytest.raises(RemoteProtocolError, match="shorter than 16"):
        a.next_event()


def test_our_auth_cannot_be_forged_by_hand() -> None:
    a, b = pair()
    handshakes(a, b)
    with pytest.raises(LocalProtocolError, match="does not match"):
        a.send(Auth(mac=b"\0" * 32))


def test_auth_is_only_for_authenticated_links() -> None:
    with pytest.raises(LocalProtocolError):
        PeerConnection().auth()


def test_reflected_handshake_is_refused() -> None:
    """Our own Handshake and Auth sent back to us."""
    conn = PeerConnection(keys=KEYS, dialer=False)
    conn.send(HELLO_A)
    conn.receive_data(encode(HELLO_A))
    assert conn.next_event() == HELLO_A
    conn.receive_data(encode(conn.auth()))
    with pytest.raises(RemoteProtocolError, match="echoed our own nonce"):
        conn.next_event()


def test_relay_between_two_members_is_refused() -> None:
    """A stranger dials alice and bob, gives each the other's handshake and relays Auth.

    Both members accepted a connection, so both MAC as acceptors and expect a dialer:
    the relayed proofs fail on both sides.
    """
    alice = PeerConnection(keys=KEYS, dialer=False)
    bob = PeerConnection(keys=KEYS, dialer=False)
    hello_a, hello_b = alice.send(HELLO_A), bob.send(HELLO_B)
    alice.receive_data(hello_b)
    bob.receive_data(hello_a)
    assert alice.next_event() == HELLO_B
    assert bob.next_event() == HELLO_A
    bob.receive_data(alice.send(alice.auth()))
    alice.receive_data(bob.send(bob.auth()))
    for victim in (alice, bob):
        with pytest.raises(RemoteProtocolError, match="cluster authentication failed"):
            victim.next_event()


def test_verify_auth_directly() -> None:
    good = make_auth(KEYS, ours=HELLO_B, theirs=HELLO_A, dialer=False)
    verify_auth(KEYS, good, ours=HELLO_A, theirs=HELLO_B, dialer=True)
    with pytest.raises(RemoteProtocolError):
        verify_auth(KEYS, good, ours=HELLO_A, theirs=HELLO_B, dialer=False)
    with pytest.raises(RemoteProtocolError):
        verify_auth(OTHER, good, ours=HELLO_A, theirs=HELLO_B, dialer=True)


def test_bytewise_feeding_of_an_authenticated_handshake() -> None:
    a, b = pair()
    data = a.send(HELLO_A)
    b.send(HELLO_B)
    a.receive_data(encode(HELLO_B))
    a.next_event()
    data += a.send(a.auth())
    events: list[object] = []
    for i in range(len(data)):
        b.receive_data(data[i : i + 1])
        while (event := b.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [HELLO_A, a.auth()]
    assert b.authenticated
