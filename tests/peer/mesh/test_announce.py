"""The node's announce loop on virtual time: backoff while the tracker is away, and back
within one interval once it returns (a restarted tracker has an empty memory store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from peer.mesh.swarm import Swarm
from peer.mesh.tracker_client import TrackerClient
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Flights
from peer.mirror.upstream import Upstream
from tracker import protocol as p

INTERVAL = 2.0


def _swarm(tmp_path: Path, handler: Any) -> Swarm:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    cache.open()
    return Swarm(
        peer_id="me", advertise="127.0.0.1", cache=cache, flights=Flights(),
        upstream=Upstream({}), metrics=NodeMetrics(),
        tracker=TrackerClient("http://tracker", peer_id="me", session=b"s" * 16, client=http),
    )  # fmt: skip


def _reply(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/announce":
        body = p.encode(p.AnnounceReply(interval=30.0, peer_ttl=90.0))
    else:
        body = p.encode(p.Ack())
    return httpx.Response(200, content=body, headers={"content-type": p.MEDIA_TYPE})


async def test_change_during_an_announce_is_announced_next(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A download that starts and ends while an announce is in flight (a small blob on a
    slow tracker) must not stay "in progress" at the tracker for a whole interval."""
    sent: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/announce":
            sent.append(trio.current_time())
            await trio.sleep(1.0)  # a slow tracker
        return _reply(request)

    swarm = _swarm(tmp_path, handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(swarm._announce_loop)
        await trio.sleep(0.5)  # the first announce is in flight
        assert len(sent) == 1
        swarm.announce_soon()  # the state changed meanwhile
        await trio.sleep(2.0)
        assert len(sent) == 2, "the change waited for the next interval"
        nursery.cancel_scope.cancel()


async def test_reannounce_within_one_interval_after_a_long_outage(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    down = False
    announces: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("refused")
        if request.url.path == "/v1/announce":
            announces.append(trio.current_time())
            body = p.encode(p.AnnounceReply(interval=INTERVAL, peer_ttl=3 * INTERVAL))
        else:
            body = p.encode(p.Ack())
        return httpx.Response(200, content=body, headers={"content-type": p.MEDIA_TYPE})

    swarm = _swarm(tmp_path, handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(swarm._announce_loop)
        await trio.sleep(5)
        assert announces
        assert swarm.tracker_ok
        down = True
        await trio.sleep(120)  # long enough for an uncapped backoff to reach a minute
        assert not swarm.tracker_ok
        down = False
        back = trio.current_time()
        await trio.sleep(INTERVAL * 1.1 + 0.01)
        assert announces[-1] >= back, "no announce within one interval of the tracker's return"
        assert swarm.tracker_ok
        nursery.cancel_scope.cancel()


async def test_wait_announced_waits_for_an_announce_that_read_our_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A download's first real lookup waits for the announce that lists it: one already in
    flight when the download starts read the state without it, so it does not count."""
    sent: list[float] = []
    down = False

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/announce":
            sent.append(trio.current_time())
            await trio.sleep(1.0)  # a slow tracker
            if down:
                raise httpx.ConnectError("refused")
        return _reply(request)

    swarm = _swarm(tmp_path, handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(swarm._announce_loop)
        await trio.sleep(0.5)  # the first announce (sent at 0) is in flight
        swarm.announce_soon()  # a download starts
        await swarm.wait_announced()
        assert sent == [0.0, 1.0 + 0.05]  # the next one, after the debounce
        assert trio.current_time() == 2.05
        down = True  # a tracker that fails still releases the waiter
        swarm.announce_soon()
        await swarm.wait_announced()
        assert sent[-1] == pytest.approx(2.05 + 0.05)
        assert trio.current_time() == pytest.approx(2.05 + 0.05 + 1.0)
        nursery.cancel_scope.cancel()
