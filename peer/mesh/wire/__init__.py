"""The peer wire protocol, sans-IO: bytes in, events out, bytes to send.

Theory of operation
-------------------
Nodes trade pieces of blobs over one TCP port (``--p2p-listen``). This package turns that
byte stream into typed events and back, and does nothing else: no sockets, no clock, no
trio. The trio shell (:mod:`peer.mesh.link`) reads bytes, feeds them here and writes what
comes back, exactly as an h11-based server drives ``h11.Connection``.

Three layers, each small enough to hold in one's head:

``framing``
    A u32 big-endian length prefix, checked against the receiver's cap before the frame is
    buffered or decoded, then a u16 header length, a msgpack header, and a raw trailer.
    Piece data rides in the trailer, so it is never copied through msgpack (Kraken frames
    its protobuf messages the same way and sends piece payloads raw after the header).
``messages``
    Frozen value types (Handshake, Bitfield, Have, Interested, Request, Piece, Cancel,
    Busy, Goodbye, Auth) and one ``decode`` that turns *any* malformed frame into
    :class:`~peer.errors.RemoteProtocolError`. The handshake carries the protocol version
    from day one, and how many requests its sender accepts outstanding.
``state`` and ``connection``
    ``PeerConnection``: the transition table (handshake first, then anything, nothing
    after Goodbye, errors are final) plus the request books that make pipelining safe
    (replies must match requests; limits on outstanding requests and in-flight bytes;
    replies that cross a Cancel are dropped quietly).
``auth``
    With a cluster secret, each side follows its Handshake with ``Auth``: an HMAC over
    both handshakes' ids and nonces and its role, checked before anything else is
    accepted (docs/security.md).

A link's life::

    A: Handshake ──────────────▶           ◀────────────── B: Handshake
    A: Auth(mac) ──────────────▶           ◀────────────── B: Auth(mac)   (with a secret)
    A: Interested(d) ──────────▶           ◀────────────── B: Bitfield(d, ...)
    A: Request(d, 3, len) ─────▶           ◀────────────── B: Piece(d, 3, data)
    A: Request(d, 4, len) ─────▶           ◀────────────── B: Busy(d, 4, retry_after)
                                           ◀────────────── B: Have(d, 7)
    A: Goodbye("done") ────────▶  EOF

Pieces are verified above this layer (:mod:`peer.mesh.pieces`) against SHA-256 hashes
the tracker recorded when a node fetched them from the origin: the wire only promises
that a Piece answers a Request with the right length.
"""

from __future__ import annotations

from peer.mesh.wire.connection import NEED_DATA, Closed, Event, PeerConnection
from peer.mesh.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
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
)
from peer.mesh.wire.state import State

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Auth",
    "Bitfield",
    "Busy",
    "Cancel",
    "Closed",
    "Event",
    "Goodbye",
    "Handshake",
    "Have",
    "Interested",
    "Message",
    "PeerConnection",
    "Piece",
    "Request",
    "State",
]
