"""PeerLink over trio memory streams, on virtual time (layer 2)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from peer.errors import IntegrityError, RemoteProtocolError
from peer.mesh.link import PeerLink, ServePiece
from peer.mesh.pieces import Bitfield, PiecePlan, hash_piece, verify_piece
from peer.mesh.ratelimit import TokenBucket
from peer.mesh.scheduler import ORIGIN, PieceScheduler, SchedulerConfig
from peer.mesh.wire.connection import Closed
from peer.mesh.wire.messages import (
    Bitfield as BitfieldMsg,
)
from peer.mesh.wire.messages import (
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
from tests.helpers.wirepair import DIGEST as D
from tests.helpers.wirepair import RawPeer

TEST_TIMEOUT = 20.0  # virtual seconds under autojump_clock, real ones otherwise


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Give a test a deadline, so that a deadlock fails it instead of hanging the run
    (under ``autojump_clock`` a deadlocked test would otherwise spin forever)."""

    @functools.wraps(test)
    async def wrapper(*args: object, **kwargs: object) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            await test(*args, **kwargs)

    return wrapper


BLOB = bytes(range(256)) * 40  # 10,240 bytes
PLAN = PiecePlan(len(BLOB), 1000)  # 11 pieces, the last one 240 bytes
DIGEST = hashlib.sha256(BLOB).digest()
HASHES = [hash_piece(BLOB[s:e]) for s, e in map(PLAN.span, range(PLAN.count))]


def hello(name: str, max_requests: int = 4) -> Handshake:
    return Handshake(peer_id=name, max_requests=max_requests)


def make_link(
    stream: trio.abc.Stream, name: str, **kwargs: object
) -> tuple[PeerLink, trio.MemoryReceiveChannel[Message]]:
    send, recv = trio.open_memory_channel[Message](16)
    return PeerLink(stream, hello(name), events=send, **kwargs), recv  # type: ignore[arg-type]


def seeder(blob: bytes, *, corrupt: bool = False) -> ServePiece:
    async def serve(request: Request) -> bytes | None:
        await trio.sleep(0.01)  # a disk read
        start, _ = PLAN.span(request.index)
        data = blob[start + request.offset : start + request.offset + request.length]
        return bytes(b ^ 0xFF for b in data) if corrupt else data

    return serve


async def answer_interest(link: PeerLink, events: trio.MemoryReceiveChannel[Message]) -> None:
    """A seeder's event loop: answer Interested with a full bitfield."""
    async for event in events:
        if isinstance(event, Interested):
            have = Bitfield.full(PLAN.count).to_bytes()
            await link.send(
                BitfieldMsg(digest=DIGEST, size=PLAN.size, piece_size=PLAN.piece_size, have=have)
            )


@asynccontextmanager
async def seeded_link(
    nursery: trio.Nursery, name: str, *, corrupt: bool = False
) -> AsyncIterator[tuple[PeerLink, trio.MemoryReceiveChannel[Message]]]:
    """A leecher-side link to a seeder called ``name`` (both running)."""
    ours, theirs = trio.testing.memory_stream_pair()
    seed_link, seed_events = make_link(theirs, name, serve=seeder(BLOB, corrupt=corrupt))
    nursery.start_soon(seed_link.run)
    nursery.start_soon(answer_interest, seed_link, seed_events)
    link, events = make_link(ours, "leecher")
    assert (await nursery.start(link.run)).peer_id == name
    yield link, events


@bounded
async def test_two_links_exchange_a_blob(nursery: trio.Nursery) -> None:
    async with seeded_link(nursery, "seed") as (link, events):
        await link.send(Interested(digest=DIGEST))
        bitfield = await events.receive()
        assert isinstance(bitfield, BitfieldMsg)
        assert Bitfield.from_bytes(bitfield.have, PLAN.count).complete
        pieces: dict[int, bytes] = {}

        async def fetch(index: int) -> None:
            reply = await link.request(
                Request(digest=DIGEST, index=index, length=PLAN.length(index))
            )
            assert isinstance(reply, Piece)
            verify_piece(PLAN, index, reply.data, HASHES[index])
            pieces[index] = reply.data

        with trio.fail_after(10):
            async with trio.open_nursery() as fetches:  # all at once: the link pipelines
                for index in range(PLAN.count):
                    fetches.start_soon(fetch, index)
        assert link.conn.outstanding == 0
        assert hashlib.sha256(b"".join(pieces[i] for i in range(PLAN.count))).digest() == DIGEST


@bounded
async def test_scheduler_over_links_bans_a_corrupt_peer(nursery: trio.Nursery) -> None:
    """The shell loop above the links: two seeders, one of them lying."""
    sched: PieceScheduler[str] = PieceScheduler(
        PLAN, config=SchedulerConfig(origin=False, per_peer=2)
    )
    links: dict[str, PeerLink] = {}
    got: dict[int, bytes] = {}
    for name, corrupt in (("liar", True), ("honest", False)):
        link, events = await seeded_link(nursery, name, corrupt=corrupt).__aenter__()
        links[name] = link
        await link.send(Interested(digest=DIGEST))
        bitfield = await events.receive()
        assert isinstance(bitfield, BitfieldMsg)
        sched.on_bitfield(name, Bitfield.from_bytes(bitfield.have, PLAN.count))
    progress = trio.Event()

    async def fetch(peer: str, index: int) -> None:
        nonlocal progress
        reply = await links[peer].request(
            Request(digest=DIGEST, index=index, length=PLAN.length(index))
        )
        now = trio.current_time()
        assert isinstance(reply, Piece)
        try:
            verify_piece(PLAN, index, reply.data, HASHES[index])
        except IntegrityError:
            for loser in sched.on_piece_bad(peer, index, now):
                assert loser.source == peer  # the shell would cancel these
        else:
            got[index] = reply.data
            sched.on_piece_ok(peer, index, now)
        progress.set()
        progress = trio.Event()

    with trio.fail_after(30):
        async with trio.open_nursery() as fetches:
            while not sched.done:
                for source, index in sched.next_requests(trio.current_time()):
                    assert source != ORIGIN
                    fetches.start_soon(fetch, source, index)
                await progress.wait()
    assert sched.is_banned("liar")
    assert b"".join(got[i] for i in range(PLAN.count)) == BLOB


@bounded
async def test_stalled_peer_handshake_times_out(autojump_clock: trio.testing.MockClock) -> None:
    ours, _silent = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me", handshake_timeout=5.0)
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await link.run()
    assert trio.current_time() - start == 5.0


@bounded
async def test_stalled_peer_request_times_out_and_is_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me")
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError), trio.fail_after(3.0):
        await link.request(Request(digest=D, index=7, length=10))
    assert trio.current_time() - start == 3.0
    assert await peer.next() == Request(digest=D, index=7, length=10)
    assert await peer.next() == Cancel(digest=D, index=7)
    assert link.conn.outstanding == 0
    await peer.send(Piece(digest=D, index=7, data=b"x" * 10))  # too late: dropped quietly
    await peer.send(Have(digest=D, index=1))
    await trio.testing.wait_all_tasks_blocked()
    assert link.conn.our_state is State.OPEN


@bounded
async def test_peer_leaving_before_handshake(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me")
    peer = RawPeer(theirs)
    await peer.send(Goodbye(reason="full"))
    with pytest.raises(trio.BrokenResourceError, match="full"):
        await link.run()


@bounded
async def test_no_server_answers_busy(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me", busy_retry_after=2.0)
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await peer.send(Request(digest=D, index=0, length=5))
    assert await peer.next() == Busy(digest=D, index=0, retry_after=2.0)


@bounded
async def test_request_for_unknown_piece_answers_busy(nursery: trio.Nursery) -> None:
    async def serve(request: Request) -> bytes | None:
        return None

    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me", serve=serve, busy_retry_after=2.0)
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await peer.send(Request(digest=D, index=0, length=5))
    assert await peer.next() == Busy(digest=D, index=0, retry_after=2.0)


@bounded
async def test_peer_cancel_stops_serving(nursery: trio.Nursery) -> None:
    started, stopped = trio.Event(), trio.Event()

    async def serve(request: Request) -> bytes | None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    ours, theirs = trio.testing.memory_stream_pair()
    link, events = make_link(ours, "me", serve=serve)
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await peer.send(Request(digest=D, index=0, length=5))
    await started.wait()
    await peer.send(Cancel(digest=D, index=0))
    with trio.fail_after(1):
        await stopped.wait()
    assert await events.receive() == Cancel(digest=D, index=0)
    assert link.statistics()["serving"] == 0
    assert link.conn.peer_outstanding == 0


@bounded
async def test_protocol_error_ends_the_link(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, events = make_link(ours, "me")
    peer = RawPeer(theirs)
    errors: list[BaseException] = []
    pending: list[BaseException] = []

    async def run() -> None:
        try:
            await link.run()
        except RemoteProtocolError as exc:  # a plain exception, not a group
            errors.append(exc)

    async def wait_piece() -> None:
        try:
            await link.request(Request(digest=D, index=0, length=5))
        except trio.BrokenResourceError as exc:
            pending.append(exc)

    nursery.start_soon(run)
    await peer.hello()
    nursery.start_soon(wait_piece)
    assert isinstance(await peer.next(), Request)
    await peer.stream.send_all(b"\x00\x00\x00\x03\x00\x01\xc1")  # undecodable header
    await link.wait_closed()
    await trio.testing.wait_all_tasks_blocked()
    assert len(errors) == 1
    assert len(pending) == 1
    assert link.conn.our_state is State.ERROR
    with pytest.raises(trio.EndOfChannel):
        await events.receive()  # the events channel closes with the link


@bounded
async def test_close_says_goodbye_and_waits_for_the_peer(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, events = make_link(ours, "me")
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await link.send(Have(digest=D, index=3))
    link.close("done")
    assert await peer.next() == Have(digest=D, index=3)
    assert await peer.next() == Goodbye(reason="done")
    assert await peer.next() == Closed(clean=True)  # our side of the stream is shut
    with pytest.raises(trio.ClosedResourceError):
        link.send_nowait(Have(digest=D, index=4))
    await peer.send(Goodbye(reason="bye"))
    await peer.stream.aclose()
    with trio.fail_after(1):
        await link.wait_closed()
    assert await events.receive() == Goodbye(reason="bye")


class FailingSend(trio.abc.SendStream):
    """Passes the first ``ok`` writes through, then fails like a reset connection."""

    def __init__(self, inner: trio.abc.SendStream, ok: int) -> None:
        self.inner, self.ok = inner, ok

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.ok <= 0:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("connection reset by peer")
        self.ok -= 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


@bounded
async def test_send_failure_drops_the_link(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    assert isinstance(ours, trio.StapledStream)
    flaky = trio.StapledStream(FailingSend(ours.send_stream, ok=1), ours.receive_stream)
    link, _ = make_link(flaky, "me")
    peer = RawPeer(theirs)
    failures: list[BaseException] = []

    async def run() -> None:
        try:
            await link.run()
        except trio.BrokenResourceError as exc:  # the stream's own error, unwrapped
            failures.append(exc)

    nursery.start_soon(run)
    await peer.hello()  # our handshake was the one write that got through
    link.send_nowait(Have(digest=D, index=0))
    with trio.fail_after(1):
        await link.wait_closed()
    await trio.testing.wait_all_tasks_blocked()
    assert link.conn.our_state is State.ERROR  # send_failed() was called
    assert [str(f) for f in failures] == ["connection reset by peer"]
    with pytest.raises(trio.BrokenResourceError):
        link.send_nowait(Have(digest=D, index=1))


@bounded
async def test_peer_vanishing_ends_the_link_quietly(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, events = make_link(ours, "me")
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await peer.stream.aclose()  # EOF without Goodbye
    with trio.fail_after(1):
        await link.wait_closed()
    with pytest.raises(trio.EndOfChannel):
        await events.receive()


@bounded
async def test_requests_wait_for_the_peers_slots(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me")
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello(max_requests=1)
    replies: list[Message] = []

    async def ask(index: int) -> None:
        replies.append(await link.request(Request(digest=D, index=index, length=1)))

    nursery.start_soon(ask, 0)
    nursery.start_soon(ask, 1)
    first = await peer.next()
    assert isinstance(first, Request)
    await trio.testing.wait_all_tasks_blocked()
    assert link.conn.outstanding == 1  # the second waits for a slot instead of overrunning
    await peer.send(Piece(digest=D, index=first.index, data=b"a"))
    second = await peer.next()
    assert isinstance(second, Request)
    assert second.index != first.index
    await peer.send(Busy(digest=D, index=second.index, retry_after=1))
    await trio.testing.wait_all_tasks_blocked()
    assert len(replies) == 2


@bounded
async def test_upload_rate_limit(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    blob = bytes(400_000)

    async def serve(request: Request) -> bytes | None:
        return blob[: request.length]

    ours, theirs = trio.testing.memory_stream_pair()
    bucket = TokenBucket(100_000.0, now=trio.current_time())
    link, _ = make_link(ours, "me", serve=serve, upload=bucket)
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    start = trio.current_time()
    await peer.send(Request(digest=D, index=0, length=400_000))
    piece = await peer.next()
    assert isinstance(piece, Piece)
    assert len(piece.data) == 400_000
    elapsed = trio.current_time() - start
    assert 3.0 <= elapsed <= 4.1  # 400 kB at 100 kB/s, less the bucket's first chunk


@pytest.mark.parametrize("failure", ["raises", "short"])
@bounded
async def test_failed_serve_answers_busy_and_keeps_the_link(
    nursery: trio.Nursery, failure: str
) -> None:
    async def serve(request: Request) -> bytes | None:
        if failure == "raises":
            raise OSError("disk on fire")
        return b"x" * (request.length - 1)

    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me", serve=serve, busy_retry_after=0.5)
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    await peer.send(Request(digest=D, index=2, length=5))
    assert await peer.next() == Busy(digest=D, index=2, retry_after=0.5)
    assert link.conn.our_state is State.OPEN


@bounded
async def test_request_after_close_fails_fast(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me")
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()
    link.close("bye")
    with trio.fail_after(1), pytest.raises(trio.ClosedResourceError):
        await link.request(Request(digest=D, index=0, length=1))


@bounded
async def test_download_rate_limit(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link, _ = make_link(ours, "me", download=TokenBucket(50_000.0, now=trio.current_time()))
    peer = RawPeer(theirs)
    nursery.start_soon(link.run)
    await peer.hello()

    async def play_peer() -> None:
        assert isinstance(await peer.next(), Request)
        await peer.send(Piece(digest=D, index=0, data=bytes(200_000)))

    nursery.start_soon(play_peer)
    start = trio.current_time()
    with trio.fail_after(10):
        reply = await link.request(Request(digest=D, index=0, length=200_000))
    assert isinstance(reply, Piece)
    assert 2.5 <= trio.current_time() - start <= 4.2  # 200 kB read at 50 kB/s


@bounded
async def test_send_after_a_protocol_error_is_a_broken_link(nursery: trio.Nursery) -> None:
    """Between the reader's protocol error and the end of ``run``, an event already
    delivered (an Interested) may still be answered: that must find a broken link
    (BrokenResourceError), not a LocalProtocolError the swarm logs as a bug (found by
    tests/fuzz/test_wire.py)."""
    ours, theirs = trio.testing.memory_stream_pair()
    link, _events = make_link(ours, "victim")
    nursery.start_soon(link.run)
    await RawPeer(theirs).hello("mallory")
    await trio.testing.wait_all_tasks_blocked()
    # the reader has just met garbage and not yet unwound (no checkpoint in between)
    link.conn.receive_data(b"\x00\x00\x00\x03\x00\x01\xc1")  # msgpack cannot decode it
    with pytest.raises(RemoteProtocolError):
        link.conn.next_event()
    with pytest.raises(trio.BrokenResourceError):
        link.send_nowait(Have(digest=DIGEST, index=0))
    link.abort()
