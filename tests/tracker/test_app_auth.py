"""The tracker app with a cluster secret, in process over ``httpx.ASGITransport``: every
``/v1`` route refuses unsigned, wrongly signed, stale and replayed requests, and signs its
answers; health, metrics and the admin API are unchanged."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers.clock import Clock
from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.auth import HEADER, ClusterKeys, parse_header, sign_request, verify_response
from tracker.model import Policy
from tracker.store import MemoryStore

KEYS = ClusterKeys.parse("tracker-test-secret-0123456789")
TOKEN = "admin-token"
S = b"s" * 16
NOW = 1_700_000_000.0
MSGPACK = {"content-type": p.MEDIA_TYPE}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
async def client(clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    app = TrackerApp(MemoryStore(Policy()), admin_token=TOKEN, clock=clock, cluster_keys=KEYS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as c:
        yield c


def announce(peer: str = "a") -> p.Announce:
    return p.Announce(
        peer_id=peer, session=S, host="10.1.2.3", port=5051, held=(p.BlobHeld(d(1), 42),)
    )


ROUTES: list[tuple[str, p.Message]] = [
    ("/v1/announce", announce()),
    ("/v1/leave", p.Leave(peer_id="a", session=S)),
    ("/v1/lookup", p.Lookup(digest=d(1), peer_id="b")),
    (
        "/v1/pieces",
        p.PieceHashes(digest=d(1), size=42, piece_size=1 << 14, hashes=(b"h" * 32,), peer_id="a"),
    ),
    ("/v1/pieces/query", p.PiecesQuery(digest=d(1))),
    (
        "/v1/tags",
        p.TagRecord(
            registry="docker.io",
            repository="r",
            tag="t",
            accept="a/b",
            digest=d(1),
            media_type="a/b",
            size=1,
            resolved_at=NOW,
        ),
    ),
    ("/v1/tags/query", p.TagQuery(registry="docker.io", repository="r", tag="t", accept="a/b")),
    ("/v1/lease", p.LeaseRequest(digest=d(1), piece_index=0, peer_id="a", session=S, ttl=5.0)),
]


def signed_headers(
    path: str, body: bytes, *, now: float = NOW, keys: ClusterKeys = KEYS
) -> dict[str, str]:
    header = sign_request(
        keys, method="POST", path=path, body=body, now=now, nonce=os.urandom(16)
    ).header()
    return {**MSGPACK, HEADER: header}


async def test_signed_requests_work_and_answers_are_signed(client: httpx.AsyncClient) -> None:
    for path, message in ROUTES:
        body = p.encode(message)
        headers = signed_headers(path, body)
        r = await client.post(path, content=body, headers=headers)
        assert r.status_code in (200, 404), (path, r.text)
        if r.status_code == 200:
            request = parse_header(headers[HEADER])
            assert verify_response(
                KEYS, r.headers[HEADER], request=request, status=200, body=r.content
            ), path


def unsigned(path: str, body: bytes) -> dict[str, str]:
    return MSGPACK


def wrong_secret(path: str, body: bytes) -> dict[str, str]:
    return signed_headers(path, body, keys=ClusterKeys.parse("not-the-cluster-secret!!"))


def stale(path: str, body: bytes) -> dict[str, str]:
    return signed_headers(path, body, now=NOW - 120)


def other_route(path: str, body: bytes) -> dict[str, str]:
    return signed_headers("/v1/tags" if path != "/v1/tags" else "/v1/lease", body)


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
@pytest.mark.parametrize("forge", [unsigned, wrong_secret, stale, other_route])
async def test_unauthenticated_requests_are_401_and_change_nothing(
    client: httpx.AsyncClient, route: tuple[str, p.Message], forge: object
) -> None:
    path, message = route
    body = p.encode(message)
    r = await client.post(path, content=body, headers=forge(path, body))  # type: ignore[operator]
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "cluster_auth"
    assert r.headers["www-authenticate"].startswith("Shoal-HMAC")
    assert HEADER not in r.headers
    assert (await client.get("/admin/peers")).json()["peers"] == []


async def test_replayed_announce_is_refused(client: httpx.AsyncClient, clock: Clock) -> None:
    body = p.encode(announce())
    headers = signed_headers("/v1/announce", body)
    assert (await client.post("/v1/announce", content=body, headers=headers)).status_code == 200
    clock.now += 5
    r = await client.post("/v1/announce", content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "cluster_auth")
    assert "replayed" in r.json()["message"]


async def test_a_tampered_body_is_refused(client: httpx.AsyncClient) -> None:
    body = p.encode(announce())
    headers = signed_headers("/v1/announce", body)
    evil = p.encode(announce("evil"))
    r = await client.post("/v1/announce", content=evil, headers=headers)
    assert r.status_code == 401


async def test_operations_routes_stay_as_they_were(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/admin/peers")).status_code == 200
    r = await client.post("/admin/peers/a/ban")
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.post("/admin/peers/a/ban", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
