"""``ConnectionPair``: two sans-IO ``PeerConnection`` values wired back to back (h11 style)."""

from __future__ import annotations

from typing import Any

import trio

from peer.mesh.wire.connection import NEED_DATA, Event, PeerConnection
from peer.mesh.wire.messages import Handshake, Message

DIGEST = bytes(range(32))


def events_of(conn: PeerConnection) -> list[Event]:
    """Drain ``conn`` until it needs data (or reports Closed)."""
    out: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if not isinstance(event, Message):
            return out  # Closed repeats forever


class ConnectionPair:
    """``a`` and ``b``: whatever one sends is fed to the other."""

    def __init__(self, **limits: Any) -> None:
        self.a = PeerConnection(**limits)
        self.b = PeerConnection(**limits)

    def other(self, conn: PeerConnection) -> PeerConnection:
        return self.b if conn is self.a else self.a

    def send(self, sender: PeerConnection, message: Message) -> list[Event]:
        """``sender`` sends ``message``; return what the other side sees."""
        receiver = self.other(sender)
        receiver.receive_data(sender.send(message))
        return events_of(receiver)

    def handshake(self, *, max_requests: int = 4) -> None:
        """Both sides say hello and advertise ``max_requests``."""
        for conn, name in ((self.a, "alice"), (self.b, "bob")):
            hello = Handshake(peer_id=name, max_requests=max_requests, nonce=b"n")
            assert self.send(conn, hello) == [hello]

    def close(self, sender: PeerConnection) -> list[Event]:
        """``sender`` closes its side (EOF reaches the other)."""
        receiver = self.other(sender)
        receiver.receive_data(b"")
        return events_of(receiver)


class RawPeer:
    """The far end of a link, driven by hand: a sans-IO connection over a trio stream."""

    def __init__(self, stream: trio.abc.Stream, **limits: Any) -> None:
        self.stream = stream
        self.conn = PeerConnection(**limits)

    async def send(self, message: Message) -> None:
        await self.stream.send_all(self.conn.send(message))

    async def next(self) -> Event:
        """The next message, or Closed."""
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(1 << 16))

    async def hello(self, name: str = "raw", *, max_requests: int = 4) -> Handshake:
        """Exchange handshakes; returns the link's."""
        await self.send(Handshake(peer_id=name, max_requests=max_requests))
        theirs = await self.next()
        assert isinstance(theirs, Handshake)
        return theirs
