"""Cluster authentication of a peer link, sans-IO: what each side's :class:`Auth` proves.

Mutual challenge-response with no extra round trip:

1. Both sides send their :class:`Handshake` at once, each with a fresh random ``nonce``
   (at least :data:`~peer.mesh.wire.messages.MIN_NONCE` bytes).
2. On receiving the other's handshake, each side sends ``Auth(mac)`` where ::

       mac = HMAC-SHA256(secret, frame(LINK_LABEL, sender role, sender id, receiver id,
                                       sender nonce, receiver nonce))

   ``frame`` is :func:`tracker.auth.frame` (the label, then length-prefixed parts) and the
   role is ``b"dialer"`` for the side that opened the TCP connection, else
   ``b"acceptor"``.
3. Each side checks the other's ``Auth`` (constant time, every accepted secret) before it
   accepts anything else; until then it sends nothing but its own Handshake and Auth.

Why each part is there:

* the *receiver's* fresh nonce: a MAC from one link is worthless on any other;
* the sender's fields first, and its *role*: a side never produces the MAC expected from
  its peer. Without the role, a stranger that dials two members A and B, hands each the
  other's handshake and relays their Auth messages would be let in as "A" by B: both
  would be acceptors, and each expects a dialer. (A reflected link — our own handshake
  sent back — fails the same way, and is refused by its echoed nonce as well.)

It authenticates the handshake, not the bytes after it: an attacker already on the
network path between two members can still take over a link once it is open. mTLS, or
an encrypted network, is the answer to that (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from peer.errors import RemoteProtocolError
from peer.mesh.wire.messages import MIN_NONCE, Auth, Handshake
from tracker.auth import LINK_LABEL, frame

if TYPE_CHECKING:
    from tracker.auth import ClusterKeys

__all__ = ["make_auth", "verify_auth"]

DIALER: Final = b"dialer"
ACCEPTOR: Final = b"acceptor"


def _message(sender: Handshake, receiver: Handshake, *, sender_dialed: bool) -> bytes:
    return frame(
        LINK_LABEL,
        DIALER if sender_dialed else ACCEPTOR,
        sender.peer_id.encode(),
        receiver.peer_id.encode(),
        sender.nonce,
        receiver.nonce,
    )


def make_auth(keys: ClusterKeys, *, ours: Handshake, theirs: Handshake, dialer: bool) -> Auth:
    """Our Auth for this link (``dialer``: we opened the connection)."""
    return Auth(mac=keys.mac(_message(ours, theirs, sender_dialed=dialer)))


def verify_auth(
    keys: ClusterKeys, auth: Auth, *, ours: Handshake, theirs: Handshake, dialer: bool
) -> None:
    """Check the peer's Auth (``dialer``: *we* opened the connection, so they did not).

    Raises:
        RemoteProtocolError: Their nonce is too short, they echoed our nonce, or the MAC
            is wrong (no or another cluster secret, or a relayed handshake).
    """
    if len(theirs.nonce) < MIN_NONCE:
        raise RemoteProtocolError(f"peer's handshake nonce is shorter than {MIN_NONCE} bytes")
    if theirs.nonce == ours.nonce:
        raise RemoteProtocolError("peer echoed our own nonce (a reflected handshake)")
    if not keys.verify(_message(theirs, ours, sender_dialed=not dialer), auth.mac):
        raise RemoteProtocolError(
            "cluster authentication failed: the peer has another --cluster-secret"
        )
