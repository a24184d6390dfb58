"""PeerLink with the cluster secret, over trio memory streams (layer 2): the link reports
the peer only once its Auth is verified, and a stranger gets nothing from it."""

from __future__ import annotations

import secrets
from typing import cast

import pytest
import trio
import trio.testing

from peer.errors import RemoteProtocolError
from peer.mesh.link import PeerLink
from peer.mesh.wire.connection import PeerConnection
from peer.mesh.wire.framing import FrameBuffer
from peer.mesh.wire.messages import (
    Auth,
    Handshake,
    Interested,
    Message,
    Piece,
    Request,
    decode,
    encode,
)
from tests.helpers.wirepair import DIGEST as D
from tracker.auth import ClusterKeys

KEYS = ClusterKeys.parse("a cluster secret of 32 bytes!!!!")
OTHER = ClusterKeys.parse("a different secret of 32 bytes!")


def hello(name: str) -> Handshake:
    return Handshake(peer_id=name, max_requests=4, nonce=secrets.token_bytes(32))


async def serve_abcd(request: Request) -> bytes:
    return b"abcd"[: request.length]


def make_link(
    stream: trio.abc.Stream, name: str, keys: ClusterKeys | None, *, dialer: bool
) -> tuple[PeerLink, trio.MemoryReceiveChannel[Message]]:
    send, recv = trio.open_memory_channel[Message](16)
    conn = PeerConnection(keys=keys, dialer=dialer)
    return PeerLink(stream, hello(name), events=send, serve=serve_abcd, conn=conn), recv


async def test_two_members_link_and_trade(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, _ = make_link(left, "alice", KEYS, dialer=True)
    b, _ = make_link(right, "bob", KEYS, dialer=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)  # each side waits for the other's Auth
            theirs = await nursery.start(a.run)
            await trio.testing.wait_all_tasks_blocked()
            assert theirs.peer_id == "bob"
            assert b.their_handshake is not None
            assert b.their_handshake.peer_id == "alice"
            assert a.conn.authenticated
            assert b.conn.authenticated
            reply = await a.request(Request(digest=D, index=0, length=4))
            assert isinstance(reply, Piece)
            assert reply.data == b"abcd"
            a.close()
            b.close()


@pytest.mark.parametrize(("ours", "theirs"), [(KEYS, OTHER), (KEYS, None), (None, KEYS)])
async def test_mismatched_secrets_end_both_links(
    autojump_clock: trio.testing.MockClock, ours: ClusterKeys | None, theirs: ClusterKeys | None
) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, _ = make_link(left, "alice", ours, dialer=True)
    b, _ = make_link(right, "bob", theirs, dialer=False)
    reported: dict[str, Handshake] = {}
    errors: dict[str, Exception] = {}

    async def run(name: str, link: PeerLink) -> None:
        try:
            await link.run(
                task_status=cast("trio.TaskStatus[Handshake]", _Recorder(name, reported))
            )
        except (RemoteProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            errors[name] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "alice", a)
            nursery.start_soon(run, "bob", b)
    assert set(errors) == {"alice", "bob"}
    # a side with the secret never reports a peer that did not prove it
    if ours is not None:
        assert "alice" not in reported
    if theirs is not None:
        assert "bob" not in reported


async def test_stranger_gets_no_bitfield_and_no_piece(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stranger sends its handshake, Interested and a Request, without any Auth."""
    left, right = trio.testing.memory_stream_pair()
    link, events = make_link(left, "alice", KEYS, dialer=False)
    frames = FrameBuffer(max_frame=1 << 20)
    sent: list[Message] = []

    async def read_until(count: int | None) -> None:
        while count is None or len(sent) < count:
            data = await right.receive_some()
            if not data:
                return
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                sent.append(decode(frame))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                with pytest.raises(RemoteProtocolError, match="instead of authenticating"):
                    await link.run()

            nursery.start_soon(run)
            await right.send_all(
                encode(Handshake(peer_id="mallory", max_requests=4, nonce=b"n" * 32))
            )
            await read_until(2)  # the link's Handshake, and its Auth to our handshake
            await right.send_all(encode(Interested(digest=D)))
            await right.send_all(encode(Request(digest=D, index=0, length=4)))
            await read_until(None)  # EOF: the link is gone
    assert [type(m) for m in sent] == [Handshake, Auth]  # and nothing else, ever
    assert [m async for m in events] == []


class _Recorder:
    """A task_status that records what ``started`` reports, by link name."""

    def __init__(self, name: str, into: dict[str, Handshake]) -> None:
        self.name = name
        self.into = into

    def started(self, value: Handshake | None = None) -> None:
        if value is not None:
            self.into[self.name] = value
