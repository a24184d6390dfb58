"""Per-blob link caps in the Swarm shell: two swarms over a memory stream, real links.

The decisions themselves are tested as a table in ``test_blobpeers``; here the wire
messages: a full node answers Interested with Declined (and the asker stops counting it),
never declines a wire-1 peer, and a wire-1 peer hears nothing about a blob it would cut
into other pieces.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing

from peer.mesh.blobpeers import BlobPeers
from peer.mesh.link import PeerLink
from peer.mesh.swarm import Swarm
from peer.mesh.tracker_client import TrackerClient
from peer.mesh.wire.messages import Handshake
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Flights
from peer.mirror.upstream import Upstream

D = "sha256:" + "d" * 64
SMALL = 30 << 20  # both wire versions cut it into 1 MiB pieces
BIG = 1 << 30  # version 1: 4 MiB pieces; version 2: 2 MiB


def _swarm(tmp_path: Path, name: str, *, version: int = 2) -> Swarm:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no tracker in this test")

    cache = BlobCache(tmp_path / name, max_bytes=1 << 20)
    cache.open()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    swarm = Swarm(
        peer_id=name, advertise="127.0.0.1", cache=cache, flights=Flights(),
        upstream=Upstream({}), metrics=NodeMetrics(),
        tracker=TrackerClient("http://tracker", peer_id=name, session=b"s" * 16, client=http),
    )  # fmt: skip
    if version != 2:
        hello = swarm.hello

        def old_hello() -> Handshake:
            return dataclasses.replace(hello(), version=version)

        swarm.hello = old_hello  # type: ignore[method-assign]  # a wire-1 node
    return swarm


async def _link(nursery: trio.Nursery, dialer: Swarm, acceptor: Swarm) -> PeerLink:
    """``dialer`` linked to ``acceptor`` over a memory stream pair."""
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(acceptor._accept, theirs)
    link: Any = await nursery.start(dialer._run_link, ours, acceptor.peer_id)
    assert isinstance(link, PeerLink)
    return link


async def test_full_node_declines_and_the_asker_counts_it_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = _swarm(tmp_path, "a"), _swarm(tmp_path, "b")
    b.blob_peers = BlobPeers(dial_cap=10, accept_cap=0)  # b is full for every blob
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, a, b)
        a._interest(link, "b", D, SMALL)
        assert a.blob_peers.is_on(D, "b")  # until b answers
        await trio.testing.wait_all_tasks_blocked()
        assert not b.blob_peers.is_on(D, "a")
        assert not a.blob_peers.is_on(D, "b")  # Declined: off the blob ...
        now = trio.current_time()
        assert a.blob_peers.to_dial(D, ["b"], a.links, now) == []  # ... and left alone
        assert a.blob_peers.to_dial(D, ["b"], a.links, now + 3.0) == ["b"]
        nursery.cancel_scope.cancel()


async def test_wire1_peer_is_never_declined(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = _swarm(tmp_path, "a", version=1), _swarm(tmp_path, "b")
    b.blob_peers = BlobPeers(dial_cap=10, accept_cap=0)
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, a, b)
        a._interest(link, "b", D, SMALL)
        await trio.testing.wait_all_tasks_blocked()
        assert b.blob_peers.is_on(D, "a")  # it could not have understood Declined
        assert a.blob_peers.is_on(D, "b")
        nursery.cancel_scope.cancel()


async def test_no_interest_across_versions_in_a_blob_they_cut_differently(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = _swarm(tmp_path, "a"), _swarm(tmp_path, "b", version=1)
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, a, b)
        a._interest(link, "b", D, BIG)
        await trio.testing.wait_all_tasks_blocked()
        assert not a.blob_peers.is_on(D, "b")  # nothing sent: no Interested
        assert not b.blob_peers.is_on(D, "a")
        a._interest(link, "b", D, SMALL)  # a blob both cut alike is shared as before
        await trio.testing.wait_all_tasks_blocked()
        assert b.blob_peers.is_on(D, "a")
        nursery.cancel_scope.cancel()


class _Fetch:
    """Stands in for b's download of the blob: counts the peers it is told about."""

    def __init__(self) -> None:
        self.company = 0

    def on_company(self) -> None:
        self.company += 1

    def on_peer_gone(self, peer: str) -> None:
        return None


async def test_a_peer_taken_for_a_blob_we_fetch_is_company_for_that_fetch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A node fetching a blob alone gathers its hash records (fetch_origin.RECORD_PAUSE);
    # a peer it takes for the blob must end that wait, bitfield sent or not.
    a, b = _swarm(tmp_path, "a"), _swarm(tmp_path, "b")
    fetch = _Fetch()
    b.fetches[D] = fetch  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, a, b)
        a._interest(link, "b", D, SMALL)
        await trio.testing.wait_all_tasks_blocked()
        assert b.blob_peers.is_on(D, "a")
        assert fetch.company == 1
        nursery.cancel_scope.cancel()


async def test_a_declined_peer_is_no_company(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = _swarm(tmp_path, "a"), _swarm(tmp_path, "b")
    b.blob_peers = BlobPeers(dial_cap=10, accept_cap=0)  # b is full for every blob
    fetch = _Fetch()
    b.fetches[D] = fetch  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, a, b)
        a._interest(link, "b", D, SMALL)
        await trio.testing.wait_all_tasks_blocked()
        assert fetch.company == 0
        nursery.cancel_scope.cancel()
