"""The tracker client with the cluster secret against the real tracker app (in process):
members get through, strangers are refused, and an impostor tracker is not believed."""

from __future__ import annotations

import httpx
import pytest

from peer.errors import TrackerRejected, TrackerUnavailable
from peer.mesh.tracker_client import NodeState, TrackerClient
from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.auth import ClusterKeys
from tracker.model import Policy
from tracker.store import MemoryStore

KEYS = ClusterKeys.parse("client-test-secret-0123456789")
D = "sha256:" + "d" * 64
STATE = NodeState(host="10.0.0.9", port=5051, held=(p.BlobHeld(D, 10),), upload_slots=2)


def tracker_app(keys: ClusterKeys | None) -> httpx.AsyncClient:
    app = TrackerApp(MemoryStore(Policy()), cluster_keys=keys)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


def node(http: httpx.AsyncClient, peer_id: str, keys: ClusterKeys | None) -> TrackerClient:
    return TrackerClient(
        "http://tracker", peer_id=peer_id, session=peer_id.encode() * 8, client=http, keys=keys
    )


async def test_members_announce_look_up_and_lease() -> None:
    async with tracker_app(KEYS) as http:
        a, b = node(http, "a", KEYS), node(http, "b", KEYS)
        await a.announce(STATE)
        assert [x.peer_id for x in await b.lookup(D)] == ["a"]
        assert (await b.lease(D, 0, ttl=5)).granted
        assert await b.get_piece_hashes(D) is None
        assert await a.leave()


@pytest.mark.parametrize("keys", [None, ClusterKeys.parse("some-other-cluster-secret")])
async def test_strangers_can_neither_announce_nor_look_up(keys: ClusterKeys | None) -> None:
    async with tracker_app(KEYS) as http:
        member, stranger = node(http, "a", KEYS), node(http, "x", keys)
        await member.announce(STATE)
        for call in (
            stranger.announce(STATE),
            stranger.lookup(D),
            stranger.lease(D, 0, ttl=5),
            stranger.put_piece_hashes(D, size=10, piece_size=16384, hashes=[b"h" * 32]),
        ):
            with pytest.raises(TrackerRejected) as info:
                await call
            assert info.value.status == 401
        assert [x.peer_id for x in await node(http, "b", KEYS).lookup(D)] == ["a"]


async def test_an_unsigned_tracker_is_not_believed() -> None:
    """A tracker without the secret (an impostor on mDNS, say) answers; the node refuses it."""
    async with tracker_app(None) as http:
        with pytest.raises(TrackerUnavailable, match="without the cluster's signature"):
            await node(http, "a", KEYS).announce(STATE)


async def test_a_tracker_of_another_cluster_is_not_believed() -> None:
    async with tracker_app(KEYS) as http:
        impostor = ClusterKeys.parse("impostor-secret-0123456789")

        async def relay(request: httpx.Request) -> httpx.Response:
            # passes the request on, then re-signs nothing: the signature it returns is
            # the real tracker's, over another request
            upstream = await http.post(
                str(request.url), content=request.content, headers=dict(request.headers)
            )
            return httpx.Response(upstream.status_code, content=b"\x80", headers=upstream.headers)

        async with httpx.AsyncClient(transport=httpx.MockTransport(relay)) as tampering:
            with pytest.raises(TrackerUnavailable, match="signature"):
                await node(tampering, "a", KEYS).announce(STATE)
        with pytest.raises(TrackerRejected):
            await node(http, "a", impostor).announce(STATE)
