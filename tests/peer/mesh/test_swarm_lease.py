"""Swarm's tracker calls for a fetch against a canned tracker: which lease replies let us
fetch from the origin, releases, and lookups only while we have room for more peers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from peer.mesh.blobpeers import BlobPeers
from peer.mesh.swarm import Swarm
from peer.mesh.tracker_client import TrackerClient
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Flights
from peer.mirror.upstream import Upstream
from tracker import protocol as p

D = "sha256:" + "d" * 64


def _swarm(tmp_path: Path, replies: list[p.LeaseReply | None], asked: list[float]) -> Swarm:
    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(p.decode(p.LeaseRequest, request.content).ttl)
        reply = replies.pop(0)
        if reply is None:
            raise httpx.ConnectError("tracker down")
        return httpx.Response(200, content=p.encode(reply), headers={"content-type": p.MEDIA_TYPE})

    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    cache.open()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Swarm(
        peer_id="me", advertise="127.0.0.1", cache=cache, flights=Flights(),
        upstream=Upstream({}), metrics=NodeMetrics(),
        tracker=TrackerClient("http://tracker", peer_id="me", session=b"s" * 16, client=http),
    )  # fmt: skip


GRANTED = p.LeaseReply(granted=True, holder="me", expires_at=1e9)
HELD = p.LeaseReply(granted=False, holder="other", expires_at=1e9)
OURS = p.LeaseReply(granted=False, holder="me", expires_at=1e9)  # an older tracker's renewal
CAPPED = p.LeaseReply(granted=False, holder="other", expires_at=1e9, capped=True)
CAPPED_ME = p.LeaseReply(granted=False, holder="me", expires_at=1e9, capped=True)


RUN = p.LeaseReply(granted=True, holder="me", expires_at=1e9, count=5)
AWAY = p.LeaseReply(granted=True, holder="me", expires_at=0.0)  # tracker down: one piece


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        (GRANTED, GRANTED),
        (RUN, RUN),
        (None, AWAY),  # no tracker: fetch it ourselves, one piece
        (OURS, GRANTED),  # an older tracker's renewal of our own lease
        (HELD, HELD),
        (CAPPED, CAPPED),
        (CAPPED_ME, CAPPED_ME),  # the blob's first lease is ours (another piece): still capped
    ],
)
async def test_lease_reply_decides_the_origin(
    tmp_path: Path, reply: p.LeaseReply | None, answer: p.LeaseReply
) -> None:
    asked: list[float] = []
    swarm = _swarm(tmp_path, [reply], asked)
    assert await swarm.lease(D, 3, 15.0, 5) == answer
    assert asked == [15.0]


async def test_release_is_a_zero_ttl_lease_and_never_raises(tmp_path: Path) -> None:
    asked: list[float] = []
    swarm = _swarm(tmp_path, [GRANTED, None], asked)
    await swarm.release(D, 3)
    await swarm.release(D, 3)  # tracker down: the lease expires on its own
    assert asked == [0.0, 0.0]


async def test_no_lookup_while_the_blob_has_all_the_peers_we_dial(tmp_path: Path) -> None:
    looked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        looked.append(p.decode(p.Lookup, request.content).digest)
        reply = p.LookupReply(digest=D, size=1, peers=())
        return httpx.Response(200, content=p.encode(reply), headers={"content-type": p.MEDIA_TYPE})

    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    cache.open()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    swarm = Swarm(
        peer_id="me", advertise="127.0.0.1", cache=cache, flights=Flights(),
        upstream=Upstream({}), metrics=NodeMetrics(),
        tracker=TrackerClient("http://tracker", peer_id="me", session=b"s" * 16, client=http),
    )  # fmt: skip
    fetch: Any = SimpleNamespace(plan=SimpleNamespace(size=1))
    await swarm.find_peers(D, fetch)
    assert looked == [D]
    swarm.blob_peers = BlobPeers(dial_cap=0)  # full: nobody to dial
    await swarm.find_peers(D, fetch)
    assert looked == [D]
