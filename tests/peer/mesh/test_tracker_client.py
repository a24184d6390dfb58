"""The tracker client: error mapping, a round trip against the real app, and the announce
loop's backoff, recovery and goodbye on virtual time."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from peer.errors import TrackerRejected, TrackerUnavailable
from peer.mesh.tracker_client import (
    LEAVE_TIMEOUT,
    MAX_BACKOFF,
    NodeState,
    TrackerClient,
    announce_loop,
    backoff_delay,
)
from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.store import MemoryStore

S = b"s" * 16
D = "sha256:" + "d" * 64
STATE = NodeState(host="10.0.0.9", port=5051, held=(p.BlobHeld(D, 10),), upload_slots=2)
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def client_for(handler: Handler, peer_id: str = "me") -> TrackerClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TrackerClient("http://tracker:5052/", peer_id=peer_id, session=S, client=http)


def raising(exc: Exception) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def answering(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return handler


def error(status: int, code: str) -> Handler:
    return answering(status, json.dumps({"error": code, "message": "nope"}).encode())


@pytest.mark.parametrize(
    "handler",
    [
        raising(httpx.ConnectError("refused")),
        raising(httpx.ReadTimeout("slow")),
        raising(httpx.ConnectTimeout("slow")),
        raising(httpx.RemoteProtocolError("garbled")),
        answering(200, b"\xc1 not msgpack", p.MEDIA_TYPE),
        answering(200, p.encode(p.Ack()), p.MEDIA_TYPE),  # the wrong message kind
    ],
    ids=["connect", "read timeout", "connect timeout", "protocol", "garbage", "wrong kind"],
)
async def test_transport_failures_are_tracker_unavailable(handler: Handler) -> None:
    async with client_for(handler) as client:
        with pytest.raises(TrackerUnavailable):
            await client.announce(STATE)


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_message"), (403, "banned"), (404, "not_found"), (409, "peer_conflict"),
     (429, "too_many_requests"), (500, "internal"), (503, "store_unavailable")],
)  # fmt: skip
async def test_error_statuses_are_tracker_rejected(status: int, code: str) -> None:
    async with client_for(error(status, code)) as client:
        with pytest.raises(TrackerRejected) as info:
            await client.lookup(D)
    assert info.value.status == status
    assert code in str(info.value)


async def test_non_json_error_bodies_are_quoted() -> None:
    async with client_for(answering(502, b"<html>bad gateway</html>", "text/html")) as client:
        with pytest.raises(TrackerRejected, match="bad gateway") as info:
            await client.announce(STATE)
    assert info.value.status == 502


async def test_queries_turn_404_into_none_but_other_errors_still_raise() -> None:
    async with client_for(error(404, "not_found")) as client:
        assert await client.get_piece_hashes(D) is None
        assert await client.get_tag(registry="r", repository="x", tag="t", accept="") is None
    async with client_for(error(503, "store_unavailable")) as client:
        with pytest.raises(TrackerRejected):
            await client.get_piece_hashes(D)


async def test_round_trip_against_the_real_app() -> None:
    app = TrackerApp(MemoryStore())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    me = TrackerClient("http://tracker", peer_id="me", session=S, client=http)
    other = TrackerClient("http://tracker", peer_id="other", session=b"o" * 16, client=http)
    async with http:
        reply = await me.announce(STATE)
        assert (reply.interval, reply.draining) == (30.0, False)
        assert await me.lookup(D) == []  # never ourselves
        [peer] = await other.lookup(D, limit=4)
        assert (peer.peer_id, peer.host, peer.port, peer.complete) == ("me", "10.0.0.9", 5051, True)

        stored = await me.put_piece_hashes(D, size=10, piece_size=1 << 14, hashes=[b"h" * 32])
        assert stored == p.PiecesPutReply(stored=True)
        record = await other.get_piece_hashes(D)
        assert record is not None
        assert (record.hashes, record.peer_id) == ((b"h" * 32,), "me")

        # Pieces fetched by different nodes: each records its own, b"" for the others.
        d2 = "sha256:" + "e" * 64

        async def put(client: TrackerClient, hashes: list[bytes]) -> p.PiecesPutReply:
            return await client.put_piece_hashes(
                d2, size=3 << 14, piece_size=1 << 14, hashes=hashes
            )

        assert await put(me, [b"", b"1" * 32, b""]) == p.PiecesPutReply(stored=True)
        assert await put(other, [b"0" * 32, b"", b"2" * 32]) == p.PiecesPutReply(stored=True)
        assert await put(other, [b"0" * 32, b"", b""]) == p.PiecesPutReply(stored=False)
        assert await put(other, [b"", b"x" * 32, b""]) == p.PiecesPutReply(
            stored=False, conflict=True
        )
        record = await me.get_piece_hashes(d2)
        assert record is not None
        assert (record.hashes, record.peer_id) == ((b"0" * 32, b"1" * 32, b"2" * 32), "me")

        tag = p.TagRecord(
            registry="docker.io", repository="library/alpine", tag="3", accept="",
            digest=D, media_type="a/b", size=10, resolved_at=5.0,
        )  # fmt: skip
        assert await me.put_tag(tag)
        assert not await other.put_tag(tag)
        assert (
            await other.get_tag(
                registry="docker.io", repository="library/alpine", tag="3", accept=""
            )
            == tag
        )

        assert (await me.lease(D, 0, ttl=20)).granted
        held = await other.lease(D, 0, ttl=20)
        assert (held.granted, held.holder) == (False, "me")

        assert await me.leave()
        assert await other.lookup(D) == []
        await other.announce(STATE)
        with pytest.raises(TrackerRejected) as info:  # the session guards a live id
            await TrackerClient(
                "http://tracker", peer_id="other", session=b"x" * 16, client=http
            ).announce(STATE)
        assert info.value.status == 409


async def test_leave_is_shielded_from_the_cancellation_that_triggers_it() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.1)  # a checkpoint inside a cancelled scope
        seen.append(request.url.path)
        return httpx.Response(200, content=p.encode(p.Ack()))

    async with client_for(handler) as client:
        with trio.CancelScope() as scope:
            scope.cancel()
            assert await client.leave()
    assert seen == ["/v1/leave"]


async def test_leave_is_time_boxed(autojump_clock: trio.testing.MockClock) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with client_for(hang) as client:
        start = trio.current_time()
        assert not await client.leave()
        assert trio.current_time() - start == pytest.approx(LEAVE_TIMEOUT)


def test_backoff_doubles_with_equal_jitter_and_caps() -> None:
    rng = random.Random(3)
    for failures, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (500, 60.0)]:
        for _ in range(50):
            assert nominal / 2 <= backoff_delay(failures, rng) <= nominal
    assert backoff_delay(500, rng) <= MAX_BACKOFF


class FlakyTracker:
    """A tracker app behind a switch; ``restart()`` replaces it with an empty one."""

    def __init__(self) -> None:
        self.up = True
        self.app = TrackerApp(MemoryStore())
        self.attempts: list[float] = []

    def restart(self) -> None:
        self.app = TrackerApp(MemoryStore())

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/announce":
            self.attempts.append(trio.current_time())
        if not self.up:
            raise httpx.ConnectError("connection refused")
        transport = httpx.ASGITransport(app=self.app)
        return await transport.handle_async_request(request)

    def knows(self, peer_id: str) -> bool:
        store = self.app.store
        assert isinstance(store, MemoryStore)
        return peer_id in store.registry._peers


async def test_announce_loop_backs_off_then_reannounces_to_a_restarted_tracker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = FlakyTracker()
    replies: list[p.AnnounceReply] = []
    async with client_for(tracker.handler) as client, trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: announce_loop(
                client, lambda: STATE, rng=random.Random(1), on_reply=replies.append
            )
        )
        await trio.sleep(1)
        assert tracker.attempts == [0.0]  # announced at start
        assert tracker.knows("me")

        tracker.up = False  # the tracker dies ...
        tracker.restart()  # ... and comes back empty
        await trio.sleep(150)
        assert not tracker.knows("me")
        tracker.up = True
        await trio.sleep(61)  # at most one capped backoff later, the node is known again
        assert tracker.knows("me")

        expected_rng = random.Random(1)
        t, expected = 0.0, [0.0]
        t += 30.0 * (0.9 + 0.2 * expected_rng.random())  # first success: jittered interval
        expected.append(t)
        failures = 0
        while t < 151:  # down from t=1 to t=151
            failures += 1
            t += backoff_delay(failures, expected_rng)
            expected.append(t)
        assert tracker.attempts[: len(expected)] == pytest.approx(expected)
        assert len(replies) == 2  # the first success and the one after the outage
        nursery.cancel_scope.cancel()
    assert not tracker.knows("me")  # the loop said goodbye when cancelled


async def test_announce_loop_follows_the_interval_the_tracker_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/announce":
            times.append(trio.current_time())
        return httpx.Response(200, content=p.encode(p.AnnounceReply(interval=10.0, peer_ttl=30.0)))

    async with client_for(handler) as client, trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: announce_loop(client, lambda: STATE, 1000.0, leave_on_exit=False)
        )
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 8
    assert all(9.0 <= gap <= 11.0 for gap in gaps)
