"""The dashboard's data through the HTTP app: admin routes, refusals, the status page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgpack
import pytest

from tests.helpers.clock import Clock
from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.model import Policy
from tracker.store import MemoryStore

T0 = 1_700_000_000.0
S, OTHER = b"s" * 16, b"o" * 16
MSGPACK = {"content-type": p.MEDIA_TYPE}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def app(clock: Clock) -> TrackerApp:
    return TrackerApp(MemoryStore(Policy()), clock=clock)


@pytest.fixture
async def client(app: TrackerApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as c:
        yield c


def announce(
    peer: str,
    partial: tuple[tuple[int, int], ...] = (),
    *,
    held: tuple[int, ...] = (),
    session: bytes = S,
    errors: tuple[p.NodeError, ...] = (),
) -> p.Announce:
    return p.Announce(
        peer_id=peer, session=session, host="10.0.0.1", port=5051,
        held=tuple(p.BlobHeld(d(n), 1000) for n in held),
        in_progress=tuple(p.BlobInProgress(d(n), 1000, got) for n, got in partial),
        errors=errors,
    )  # fmt: skip


async def post(client: httpx.AsyncClient, message: p.Message, path: str = "/v1/announce") -> int:
    r = await client.post(path, content=p.encode(message), headers=MSGPACK)
    return r.status_code


async def test_transfers_report_when_they_last_moved(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    assert await post(client, announce("a", ((1, 100),))) == 200
    assert await post(client, announce("b", ((1, 300),))) == 200
    clock.now += 60
    assert await post(client, announce("a", ((1, 100),))) == 200  # a stalls
    assert await post(client, announce("b", ((1, 400),))) == 200  # b moves
    clock.now += 40
    everything = (await client.get("/admin/transfers")).json()
    assert everything["now"] == clock.now
    rows = {t["peer_id"]: t for t in everything["transfers"]}
    assert (rows["a"]["last_progress"], rows["a"]["stalled_for"]) == (T0, 100.0)
    assert (rows["b"]["last_progress"], rows["b"]["stalled_for"]) == (T0 + 60, 40.0)
    stuck = (await client.get("/admin/transfers", params={"stalled_for": "90"})).json()
    assert [t["peer_id"] for t in stuck["transfers"]] == ["a"]
    assert stuck["stalled_for"] == 90
    assert (await client.get("/admin/transfers", params={"stalled_for": "101"})).json()[
        "transfers"
    ] == []


@pytest.mark.parametrize(
    "query",
    [{"stalled_for": "-1"}, {"stalled_for": "1.5"}, {"stalled_for": "604801"},
     {"limit": "0"}, {"stalled_for": "x"}],
)  # fmt: skip
async def test_bad_transfer_queries_are_400(
    client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    r = await client.get("/admin/transfers", params=query)
    assert (r.status_code, r.json()["error"]) == (400, "bad_request")
    r = await client.get("/admin/errors", params={"limit": "201"})
    assert r.status_code == 400


async def test_errors_collect_node_reports_and_tracker_refusals(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    report = p.NodeError(at=T0 - 5, kind="piece_hash", message="peer x sent a bad piece")
    assert await post(client, announce("a", errors=(report,))) == 200
    clock.now += 1
    assert await post(client, announce("a", session=OTHER)) == 409
    assert await post(client, announce("a", session=OTHER)) == 409  # within the gap: once
    body = msgpack.packb({"v": 1, "t": "announce", "peer_id": "q"})
    r = await client.post("/v1/announce", content=body, headers=MSGPACK)
    assert r.status_code == 400
    clock.now += 1
    assert await post(client, p.Lookup(digest=d(9), peer_id="a"), "/v1/lookup") == 200
    assert await post(client, p.PiecesQuery(digest=d(9)), "/v1/pieces/query") == 404  # quiet
    assert await post(client, announce("a", session=OTHER)) == 409  # past the gap: again
    errors = (await client.get("/admin/errors")).json()["errors"]
    assert [(e["source"], e["kind"]) for e in errors] == [
        ("tracker", "peer_conflict"),
        ("tracker", "bad_message"),
        ("tracker", "peer_conflict"),
        ("a", "piece_hash"),
    ]
    assert errors[-1] == {"at": T0 - 5, "source": "a", "kind": "piece_hash",
                          "message": "peer x sent a bad piece"}  # fmt: skip
    assert errors[0]["message"].startswith("refused /v1/announce: peer id 'a' is live")
    assert (await client.get("/admin/errors", params={"limit": "1"})).json()["errors"] == [
        errors[0]
    ]


async def test_traffic_points(client: httpx.AsyncClient, app: TrackerApp, clock: Clock) -> None:
    await client.post(
        "/v1/announce",
        content=p.encode(p.Announce(peer_id="a", session=S, host="h", port=1,
                                    bytes_from_origin=10, bytes_from_peers=30)),
        headers=MSGPACK,
    )  # fmt: skip
    assert await app.store.sample_traffic(clock.now, interval=5.0)
    assert (await client.get("/admin/traffic")).json() == {
        "points": [{"at": T0, "bytes_from_origin": 10, "bytes_from_peers": 30}]
    }


async def test_status_page_shows_stalls_where_blobs_are_and_unsynced_tags(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    assert await post(client, announce("a", ((5, 100),), held=(1, 2))) == 200
    assert await post(client, announce("b", held=(1,))) == 200
    for n, digest in ((1, 1), (2, 3), (3, 5)):
        record = p.TagRecord(
            registry="docker.io", repository=f"library/img{n}", tag="v1", accept="",
            digest=d(digest), media_type="application/json", size=7, resolved_at=T0,
        )  # fmt: skip
        assert await post(client, record, "/v1/tags") == 200
    clock.now += 200  # a's download has not moved since; both re-announce to stay live
    assert await post(client, announce("a", ((5, 100),), held=(1, 2))) == 200
    assert await post(client, announce("b", held=(1,))) == 200
    page = (await client.get("/")).text
    assert "<td>a, b</td>" in page  # d(1) is on both
    assert "downloading: a" in page  # d(5) only in progress
    assert '<progress value="100" max="1000"' in page
    assert '<td><span class="bad">stalled</span></td>' in page  # a: 200 s without a change
    clock.now += 10
    assert await post(client, announce("a", ((5, 200),), held=(1, 2))) == 200
    assert "<td>moving</td>" in (await client.get("/")).text
    assert "docker.io/library/img2:v1" in page  # d(3): held by nobody
    assert "docker.io/library/img3:v1" in page  # d(5): only downloading
    assert "manifest downloading on 1 node(s), held whole by none" in page
    assert "docker.io/library/img1:v1" not in page  # d(1): held
    assert "<svg" in page


async def test_metrics_count_stalled_transfers(client: httpx.AsyncClient, clock: Clock) -> None:
    """Stalled: no new bytes for three announce intervals (the status page's rule)."""
    after = 3 * Policy().announce_interval
    assert await post(client, announce("a", ((1, 100), (2, 100)))) == 200
    assert await post(client, announce("b", ((1, 300),))) == 200
    clock.now += after - 1
    assert await post(client, announce("a", ((1, 100), (2, 200)))) == 200  # 1 still, 2 moves
    assert await post(client, announce("b", ((1, 300),))) == 200  # still
    assert _stalled((await client.get("/metrics")).text) == 0
    clock.now += 1
    assert _stalled((await client.get("/metrics")).text) == 2  # a's 1 and b's 1
    assert len((await client.get(f"/admin/transfers?stalled_for={after:.0f}")).json()[
        "transfers"
    ]) == 2  # fmt: skip
    assert await post(client, announce("b", ((1, 301),))) == 200  # b's moves again
    assert _stalled((await client.get("/metrics")).text) == 1


def _stalled(metrics: str) -> float:
    (line,) = [x for x in metrics.splitlines() if x.startswith("shoal_tracker_transfers_stalled ")]
    return float(line.split()[1])
