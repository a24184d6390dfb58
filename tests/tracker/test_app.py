"""Layer 2: the ASGI app in process over ``httpx.ASGITransport`` (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

import httpx
import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.clock import Clock
from tracker import protocol as p
from tracker.activity import ErrorEvent, TrafficPoint
from tracker.app import TrackerApp
from tracker.model import BlobView, HolderView, PeerView, Policy, Stats, TransferView
from tracker.status_data import NotSynced, StatusData
from tracker.status_page import render_status_page
from tracker.store import MemoryStore

S = b"s" * 16
TOKEN = "s3cret-token"
MSGPACK = {"content-type": p.MEDIA_TYPE}
AUTH = {"authorization": f"Bearer {TOKEN}"}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def make_app(clock: Clock, token: str | None = TOKEN) -> TrackerApp:
    return TrackerApp(MemoryStore(Policy()), admin_token=token, clock=clock)


@pytest.fixture
async def client(clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as c:
        yield c


async def post(client: httpx.AsyncClient, path: str, message: p.Message) -> httpx.Response:
    return await client.post(path, content=p.encode(message), headers=MSGPACK)


def announce(peer: str, *held: int, session: bytes = S) -> p.Announce:
    return p.Announce(
        peer_id=peer,
        session=session,
        host="10.1.2.3",
        port=5051,
        held=tuple(p.BlobHeld(d(n), 42) for n in held),
        bytes_from_origin=300,
        bytes_from_peers=100,
    )


async def test_peer_protocol_round_trip(client: httpx.AsyncClient, clock: Clock) -> None:
    r = await post(client, "/v1/announce", announce("a", 1))
    assert r.status_code == 200
    assert r.headers["content-type"] == p.MEDIA_TYPE
    assert p.decode(p.AnnounceReply, r.content).interval == Policy().announce_interval
    r = await post(client, "/v1/lookup", p.Lookup(digest=d(1), peer_id="b"))
    reply = p.decode(p.LookupReply, r.content)
    assert (reply.size, [x.peer_id for x in reply.peers]) == (42, ["a"])

    query = p.PiecesQuery(digest=d(1))
    assert (await post(client, "/v1/pieces/query", query)).status_code == 404
    record = p.PieceHashes(
        digest=d(1), size=42, piece_size=1 << 14, hashes=(b"h" * 32,), peer_id="a"
    )
    r = await post(client, "/v1/pieces", record)
    assert p.decode(p.PiecesPutReply, r.content) == p.PiecesPutReply(stored=True)
    assert (
        p.decode(p.PieceHashes, (await post(client, "/v1/pieces/query", query)).content) == record
    )

    key = {"registry": "docker.io", "repository": "library/alpine", "tag": "3", "accept": "a/b"}
    assert (await post(client, "/v1/tags/query", p.TagQuery(**key))).status_code == 404
    tag = p.TagRecord(**key, digest=d(1), media_type="a/b", size=42, resolved_at=clock.now)
    assert p.decode(p.TagPutReply, (await post(client, "/v1/tags", tag)).content).stored
    assert (
        p.decode(p.TagRecord, (await post(client, "/v1/tags/query", p.TagQuery(**key))).content)
        == tag
    )

    lease = p.LeaseRequest(digest=d(1), piece_index=3, peer_id="a", session=S, ttl=30.0)
    r = await post(client, "/v1/lease", lease)
    assert p.decode(p.LeaseReply, r.content) == p.LeaseReply(
        granted=True, holder="a", expires_at=clock.now + 30
    )

    r = await post(client, "/v1/leave", p.Leave(peer_id="a", session=S))
    assert p.decode(p.Ack, r.content) == p.Ack()
    r = await post(client, "/v1/lookup", p.Lookup(digest=d(1), peer_id="b"))
    assert p.decode(p.LookupReply, r.content).peers == ()


PEER_ROUTES = [
    "/v1/announce",
    "/v1/leave",
    "/v1/lookup",
    "/v1/pieces",
    "/v1/pieces/query",
    "/v1/tags",
    "/v1/tags/query",
    "/v1/lease",
]
BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("empty", b"", MSGPACK, 400, "bad_message"),
    ("garbage", b"\xc1\xff\x00", MSGPACK, 400, "bad_message"),
    ("json", b'{"peer_id": "a"}', MSGPACK, 400, "bad_message"),
    ("msgpack list", msgpack.packb([1, 2, 3]), MSGPACK, 400, "bad_message"),
    ("wrong kind", p.encode(p.Ack()), MSGPACK, 400, "bad_message"),
    ("future version", msgpack.packb({"v": 99, "t": "x"}), MSGPACK, 400, "unsupported_version"),
    ("too large", b"\x00" * (p.MAX_BODY + 1), MSGPACK, 413, "body_too_large"),
    ("no content type", p.encode(p.Ack()), {}, 415, "unsupported_media_type"),
    ("json type", b"{}", {"content-type": "application/json"}, 415, "unsupported_media_type"),
    ("bad length", b"", {**MSGPACK, "content-length": "12x"}, 400, "bad_request"),
]


@pytest.mark.parametrize("route", PEER_ROUTES)
@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_bodies_get_a_json_4xx(
    client: httpx.AsyncClient,
    route: str,
    name: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    r = await client.post(route, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json() == {"error": code, "message": r.json()["message"]}


async def test_announce_conflict_flood_and_ban(client: httpx.AsyncClient, clock: Clock) -> None:
    assert (await post(client, "/v1/announce", announce("a", 1))).status_code == 200
    r = await post(client, "/v1/announce", announce("a", 1, session=b"x" * 16))
    assert (r.status_code, r.json()["error"]) == (409, "peer_conflict")
    r = await post(client, "/v1/announce", announce("a", 1))
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    assert (await client.post("/admin/peers/a/ban", headers=AUTH)).status_code == 200
    clock.now += 5
    r = await post(client, "/v1/announce", announce("a", 1))
    assert (r.status_code, r.json()["error"]) == (403, "banned")


async def test_drain_is_reported_to_the_peer(client: httpx.AsyncClient, clock: Clock) -> None:
    await post(client, "/v1/announce", announce("a", 1))
    r = await client.post("/admin/peers/a/drain", headers=AUTH)
    assert r.json() == {"peer_id": "a", "draining": True}
    clock.now += 5
    assert p.decode(
        p.AnnounceReply, (await post(client, "/v1/announce", announce("a", 1))).content
    ).draining
    r = await post(client, "/v1/lookup", p.Lookup(digest=d(1), peer_id="b"))
    assert p.decode(p.LookupReply, r.content).peers == ()


async def test_admin_reads(client: httpx.AsyncClient, clock: Clock) -> None:
    for i in range(3):
        await post(client, "/v1/announce", announce(f"p{i}", 1, i + 2))
    r = await client.get("/admin/peers", params={"offset": 1, "limit": 1})
    body = r.json()
    assert (body["offset"], body["limit"], [x["peer_id"] for x in body["peers"]]) == (1, 1, ["p1"])
    assert body["peers"][0]["host"] == "10.1.2.3"
    assert body["peers"][0]["last_seen"] == clock.now
    r = await client.get("/admin/blobs")
    first = r.json()["blobs"][0]
    assert (first["digest"], first["holders"]) == (d(1), 3)
    r = await client.get(f"/admin/blobs/{d(1)}")
    assert [h["peer_id"] for h in r.json()["holders"]] == ["p0", "p1", "p2"]
    assert (await client.get(f"/admin/blobs/{d(99)}")).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/admin/peers?limit=0",
        "/admin/peers?limit=10001",
        "/admin/peers?offset=-1",
        "/admin/peers?offset=%C2%B2",  # a Unicode digit
        "/admin/blobs?limit=ten",
        "/admin/blobs?limit=99999999999999999999999",
        "/admin/blobs/sha256:XYZ",
        "/admin/blobs/notadigest",
    ],
)
async def test_bad_admin_parameters_are_400(client: httpx.AsyncClient, url: str) -> None:
    r = await client.get(url)
    assert (r.status_code, r.json()["error"]) == (400, "bad_request")


MUTATIONS = [
    ("POST", "/admin/peers/a/drain"),
    ("POST", "/admin/peers/a/ban"),
    ("DELETE", f"/admin/blobs/{d(1)}"),
]


@pytest.mark.parametrize(("method", "url"), MUTATIONS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
    ],
    ids=["none", "wrong", "basic", "no scheme"],
)
async def test_mutations_without_the_token_are_401(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> None:
    await post(client, "/v1/announce", announce("a", 1))
    r = await client.request(method, url, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(f"/admin/blobs/{d(1)}")).status_code == 200  # nothing changed


@pytest.mark.parametrize(("method", "url"), MUTATIONS)
async def test_mutations_are_403_when_no_token_is_configured(
    clock: Clock, method: str, url: str
) -> None:
    transport = httpx.ASGITransport(app=make_app(clock, token=None))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.request(method, url, headers={"authorization": "Bearer "})
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")


@pytest.mark.parametrize(("method", "url"), MUTATIONS)
async def test_mutations_with_the_token(client: httpx.AsyncClient, method: str, url: str) -> None:
    assert (await client.request(method, url, headers=AUTH)).status_code in (200, 404)
    await post(client, "/v1/announce", announce("a", 1))
    r = await client.request(method, url, headers={"authorization": f"bearer  {TOKEN} "})
    assert r.status_code == 200, r.text


async def test_forget_blob(client: httpx.AsyncClient) -> None:
    await post(client, "/v1/announce", announce("a", 1))
    r = await client.delete(f"/admin/blobs/{d(1)}", headers=AUTH)
    assert r.json() == {"digest": d(1), "forgotten": True}
    assert (await client.delete(f"/admin/blobs/{d(1)}", headers=AUTH)).status_code == 404


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/whatever")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = await client.get("/v1/announce")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    r = await client.put(f"/admin/blobs/{d(1)}")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, DELETE")


async def test_healthz_metrics_status_page(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "store": "memory"}
    await post(client, "/v1/announce", announce("node-7", 1))
    await post(client, "/v1/lookup", p.Lookup(digest=d(1), peer_id="b"))
    metrics = (await client.get("/metrics")).text
    assert "shoal_tracker_announces_total 1.0" in metrics
    assert "shoal_tracker_lookups_total 1.0" in metrics
    assert "shoal_tracker_peers 1.0" in metrics
    assert 'shoal_tracker_store_seconds_count{op="announce"} 1.0' in metrics
    assert 'shoal_tracker_http_requests_total{route="/v1/lookup",status="200"} 1.0' in metrics
    page = await client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "node-7" in page.text
    assert 'http-equiv="refresh"' in page.text
    assert "25.0 %" in page.text  # 100 of 400 bytes came from peers


def test_status_page_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    zero = dict.fromkeys(("held", "in_progress", "upload_slots", "load", "bytes_served"), 0)
    view = PeerView(
        peer_id=evil, host=evil, port=1, last_seen=0.0, expires_at=1.0, **zero,
        bytes_from_origin=0, bytes_from_peers=0, draining=False,
    )  # fmt: skip
    stats = Stats(
        peers=1, blobs=1, holdings=0, in_progress=1, bytes_served=0, bytes_from_origin=0,
        bytes_from_peers=0, piece_records=0, tag_records=1, leases=0,
    )  # fmt: skip
    holder = HolderView(peer_id=evil, host=evil, port=1, complete=True, bytes_held=1,
                        last_seen=0.0, draining=False)  # fmt: skip
    data = StatusData(
        now=0.0, stats=stats, peers=[view], blobs=[BlobView(digest=d(1), size=1, holders=1,
        in_progress=0)], where={d(1): (holder,)},
        transfers=[TransferView(peer_id=evil, digest=d(2), size=2, bytes_held=1,
                                last_progress=0.0)],
        stall_after=90.0, errors=[ErrorEvent(at=0.0, source=evil, kind=evil, message=evil)],
        traffic=[TrafficPoint(at=0.0, bytes_from_origin=0, bytes_from_peers=0)],
        not_synced=[NotSynced(image=evil, digest=d(3), resolved_at=0.0, reason=evil)],
        tags_checked=1,
    )  # fmt: skip
    page = render_status_page(data)
    assert "<script>" not in page
    # peer id, host, holder, transfer (cell and bar label), error x3, image, reason
    assert page.count("&lt;script&gt;") == 10


async def test_a_bug_is_a_500_and_the_app_keeps_serving(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, TrackerApp)

    async def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.store, "lookup", broken)
    r = await post(client, "/v1/lookup", p.Lookup(digest=d(1), peer_id="b"))
    assert (r.status_code, r.json()["error"]) == (500, "internal")
    assert (await client.get("/healthz")).status_code == 200


# --- the OpenAPI document matches the app ------------------------------------------------

OPENAPI = json.loads(files("tracker").joinpath("openapi.json").read_text())


async def test_openapi_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.json() == OPENAPI
    assert OPENAPI["openapi"].startswith("3.")


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in OPENAPI["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }


def implemented() -> set[tuple[str, str]]:
    app = make_app(Clock())
    routes = {(m, path) for path, methods in app._routes.items() for m in methods}
    for sample, template in [
        ("/admin/peers", "/admin/peers"),
        ("/admin/blobs", "/admin/blobs"),
        (f"/admin/blobs/{d(1)}", "/admin/blobs/{digest}"),
        ("/admin/peers/x/drain", "/admin/peers/{peer_id}/drain"),
        ("/admin/peers/x/ban", "/admin/peers/{peer_id}/ban"),
        ("/admin/transfers", "/admin/transfers"),
        ("/admin/errors", "/admin/errors"),
        ("/admin/traffic", "/admin/traffic"),
    ]:
        route, methods = app.admin.match(sample)
        assert route == template
        routes |= {(m, template) for m in methods}
    return routes


def test_openapi_documents_exactly_the_implemented_routes() -> None:
    assert documented() == implemented()


def test_openapi_mutations_declare_bearer_auth_and_refusals() -> None:
    for method, path in documented():
        operation = OPENAPI["paths"][path][method.lower()]
        mutating = path.startswith("/admin") and method != "GET"
        assert ("security" in operation) == mutating, (method, path)
        if mutating:
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


# --- fuzz: whatever arrives, the answer is never a 500 -----------------------------------

MESSAGES_FOR_FUZZ: list[p.Message] = [
    announce("b", 1, 2),
    p.Lookup(digest=d(1), peer_id="x"),
    p.Leave(peer_id="a", session=S),
    p.PiecesQuery(digest=d(1)),
    p.LeaseRequest(digest=d(1), piece_index=0, peer_id="a", session=S, ttl=1.0),
]

FUZZ_PATHS = [*PEER_ROUTES, "/admin/peers", "/admin/blobs", f"/admin/blobs/{d(1)}",
              "/admin/transfers", "/admin/errors", "/admin/traffic",
              "/admin/peers/a/drain", "/admin/peers/a/ban", "/healthz", "/", "/nope"]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]),
    path=st.one_of(st.sampled_from(FUZZ_PATHS), st.text(max_size=40).map(lambda t: "/" + t)),
    query=st.dictionaries(
        st.sampled_from(["limit", "offset", "stalled_for", "x"]), st.text(max_size=8), max_size=2
    ),
    body=st.one_of(
        st.binary(max_size=300), st.builds(p.encode, st.sampled_from(MESSAGES_FOR_FUZZ))
    ),
    content_type=st.sampled_from([p.MEDIA_TYPE, "application/json", "", "text/plain; charset=x"]),
    token=st.sampled_from([None, TOKEN, "wrong"]),
)
def test_fuzzed_requests_never_get_a_500(
    method: str, path: str, query: dict[str, str], body: bytes, content_type: str, token: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"

    async def one() -> httpx.Response:
        app = make_app(Clock())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.post("/v1/announce", content=p.encode(announce("a", 1)), headers=MSGPACK)
            return await c.request(method, path, params=query, content=body, headers=headers)

    try:
        response = trio.run(one)
    except httpx.InvalidURL:
        return  # httpx itself refuses to send such a URL
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "message"}


async def test_unread_body_closes_the_connection(client: httpx.AsyncClient) -> None:
    """An error answered before the body was read says ``Connection: close``: the server
    will not reuse the connection, so the client must not either (found by
    tests/fuzz/test_tracker.py: a peer's next request was dropped without an answer)."""
    refused = await client.post(
        "/v1/lookup", content=b"junk", headers={"content-type": "application/json"}
    )
    assert refused.status_code == 415
    assert refused.headers["connection"] == "close"
    unknown = await client.post("/v1/nothing", content=b"x")
    assert unknown.headers["connection"] == "close"
    read = await client.post("/v1/lookup", content=b"\x93", headers={"content-type": p.MEDIA_TYPE})
    assert read.status_code == 400
    assert "connection" not in read.headers
    assert "connection" not in (await client.get("/healthz")).headers


async def test_capped_leases_over_http_and_in_metrics(clock: Clock) -> None:
    app = TrackerApp(MemoryStore(Policy(max_origin_fetches=1)), admin_token=TOKEN, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tracker"
    ) as client:

        def lease(peer: str, index: int) -> p.LeaseRequest:
            return p.LeaseRequest(digest=d(1), piece_index=index, peer_id=peer, session=S, ttl=9)

        for peer in "ab":  # a lease refuses others only while its holder is a live peer
            assert (await post(client, "/v1/announce", announce(peer))).status_code == 200
        assert p.decode(
            p.LeaseReply, (await post(client, "/v1/lease", lease("a", 0))).content
        ).granted
        r = await post(client, "/v1/lease", lease("b", 1))
        assert p.decode(p.LeaseReply, r.content) == p.LeaseReply(
            granted=False, holder="a", expires_at=clock.now + 9, capped=True
        )
        r = await post(client, "/v1/lease", lease("b", 0))
        assert not p.decode(p.LeaseReply, r.content).capped  # held by a: not capped
        metrics = (await client.get("/metrics")).text
        for outcome in ("granted", "held", "capped"):
            assert f'shoal_tracker_leases_total{{result="{outcome}"}} 1.0' in metrics


async def test_recorded_pieces_of_a_complete_blob_over_http(clock: Clock) -> None:
    """Refused as capped (counted as ``capped``), naming the complete holder; ``insist``
    on the wire gets the lease."""
    app = TrackerApp(MemoryStore(Policy()), admin_token=TOKEN, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tracker"
    ) as client:
        for msg in (announce("a", 1), announce("b")):
            assert (await post(client, "/v1/announce", msg)).status_code == 200
        record = p.PieceHashes(
            digest=d(1), size=42, piece_size=1 << 14, hashes=(b"\x01" * 32,), peer_id="a"
        )
        assert (await post(client, "/v1/pieces", record)).status_code == 200
        lease = p.LeaseRequest(digest=d(1), piece_index=0, peer_id="b", session=S, ttl=9)
        r = await post(client, "/v1/lease", lease)
        assert p.decode(p.LeaseReply, r.content) == p.LeaseReply(
            granted=False, holder="a", expires_at=clock.now, capped=True
        )
        insisting = p.LeaseRequest(
            digest=d(1), piece_index=0, peer_id="b", session=S, ttl=9, insist=True
        )
        r = await post(client, "/v1/lease", insisting)
        assert p.decode(p.LeaseReply, r.content) == p.LeaseReply(
            granted=True, holder="b", expires_at=clock.now + 9
        )
        body = msgpack.unpackb(p.encode(lease))
        r = await client.post(
            "/v1/lease",
            content=msgpack.packb({**body, "insist": 1}),
            headers={"content-type": p.MEDIA_TYPE},
        )
        assert r.status_code == 400
        assert "insist" in r.json()["message"]
        metrics = (await client.get("/metrics")).text
        for outcome in ("granted", "capped"):
            assert f'shoal_tracker_leases_total{{result="{outcome}"}} 1.0' in metrics
