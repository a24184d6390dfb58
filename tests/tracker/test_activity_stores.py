"""Errors, traffic points, transfer progress and recent tags: memory and Redis agree.

The Redis half runs against a real ``redis-server`` (``conftest.redis_url``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import httpx

from tracker import protocol as p
from tracker.activity import ErrorEvent
from tracker.app import TrackerApp
from tracker.errors import TrackerError
from tracker.model import Policy, TransferView
from tracker.redis_store import RedisStore
from tracker.store import MemoryStore, Store

S, OTHER = b"s" * 16, b"o" * 16
T0 = 1_700_000_000.0


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def announce(
    peer: str,
    partial: tuple[tuple[int, int], ...] = (),
    *,
    held: tuple[int, ...] = (),
    errors: tuple[str, ...] = (),
    at: float = T0,
    session: bytes = S,
    origin: int = 0,
    peers: int = 0,
) -> p.Announce:
    return p.Announce(
        peer_id=peer, session=session, host="10.0.0.1", port=5051,
        held=tuple(p.BlobHeld(d(n), 1000) for n in held),
        in_progress=tuple(p.BlobInProgress(d(n), 1000, got) for n, got in partial),
        bytes_from_origin=origin, bytes_from_peers=peers,
        errors=tuple(p.NodeError(at=at, kind="origin", message=m) for m in errors),
    )  # fmt: skip


def tag(n: int, digest: int, at: float) -> p.TagRecord:
    return p.TagRecord(
        registry="docker.io", repository=f"library/r{n}", tag="1", accept="",
        digest=d(digest), media_type="application/json", size=7, resolved_at=at,
    )  # fmt: skip


Op = Callable[[Store], Any]
SCENARIO: list[Op] = [
    lambda s: s.announce(announce("a", ((1, 10),), errors=("e1", "e2"), origin=100), T0),
    lambda s: s.announce(announce("b", ((1, 50),), peers=300), T0 + 0.1),
    lambda s: s.transfers(T0 + 1, limit=10),
    lambda s: s.announce(announce("a", ((1, 10), (2, 0)), origin=150), T0 + 5),  # 1 stalls
    lambda s: s.announce(announce("b", ((1, 60),), peers=400), T0 + 5.1),
    # refused announces change nothing, not even progress
    lambda s: s.announce(announce("a", ((1, 99),), session=OTHER), T0 + 5.2),
    lambda s: s.announce(announce("b", ((1, 70),)), T0 + 5.15),  # too soon
    lambda s: s.transfers(T0 + 6, limit=10),
    lambda s: s.transfers(T0 + 6, limit=1),
    # a download that completes leaves the transfers; one restarted counts as moving
    lambda s: s.announce(announce("b", ((1, 5),), held=(3,)), T0 + 7),
    lambda s: s.announce(announce("a", ((2, 0),), held=(1,)), T0 + 8),
    lambda s: s.transfers(T0 + 9, limit=10),
    lambda s: s.sample_traffic(T0 + 9, interval=10.0),
    lambda s: s.sample_traffic(T0 + 18.9, interval=10.0),
    lambda s: s.announce(announce("a", ((2, 1),), origin=500), T0 + 19),
    lambda s: s.sample_traffic(T0 + 19, interval=10.0),
    lambda s: s.traffic(),
    lambda s: s.note_errors([ErrorEvent(at=T0 + 20, source="tracker", kind="bad", message="x")]),
    lambda s: s.errors(limit=10),
    lambda s: s.errors(limit=1),
    lambda s: s.put_tag(tag(1, 7, T0)),
    lambda s: s.put_tag(tag(2, 8, T0 + 1)),
    lambda s: s.put_tag(tag(1, 9, T0 + 2)),  # r1 moved: now the most recent
    lambda s: s.recent_tags(limit=10),
    lambda s: s.recent_tags(limit=1),
    lambda s: s.forget(d(8)),
    lambda s: s.recent_tags(limit=10),
    lambda s: s.announce(announce("c", ((1, 7),), held=(3, 2)), T0 + 30),
    lambda s: s.details([d(1), d(9), d(2), d(3), d(1)], T0 + 31),
    lambda s: s.ban("b", T0 + 31),
    lambda s: s.details([d(1), d(3)], T0 + 32),
]


def normalise(result: Any) -> Any:
    """Transfers of one peer come in no particular order (Redis hashes have none)."""
    if isinstance(result, list) and result and isinstance(result[0], TransferView):
        return sorted(result, key=lambda t: (t.peer_id, t.digest))
    return result


async def run(store: Store) -> list[Any]:
    out = []
    for op in SCENARIO:
        try:
            out.append(normalise(await op(store)))
        except TrackerError as exc:
            out.append(type(exc).__name__)
    return out


async def test_memory_and_redis_agree_on_the_dashboard_data(redis_store: RedisStore) -> None:
    memory = await run(MemoryStore(Policy(), rng=random.Random(0)))
    redis = await run(redis_store)
    for step, (m, r) in enumerate(zip(memory, redis, strict=True)):
        assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
    # and the answers are the ones the rules give
    first, later = memory[2], memory[7]
    assert [(t.peer_id, t.bytes_held, t.last_progress) for t in first] == [
        ("a", 10, T0), ("b", 50, T0 + 0.1),
    ]  # fmt: skip
    assert {(t.peer_id, t.digest, t.bytes_held, t.last_progress) for t in later} == {
        ("a", d(1), 10, T0),  # stalled since T0
        ("a", d(2), 0, T0 + 5),
        ("b", d(1), 60, T0 + 5.1),
    }
    assert memory[5:7] == ["PeerConflict", "TooManyRequests"]
    assert len(memory[8]) == 1
    assert {(t.peer_id, t.digest, t.last_progress) for t in memory[11]} == {
        ("b", d(1), T0 + 7),  # went from 60 back to 5 bytes: a restart, so movement
        ("a", d(2), T0 + 5),
    }
    assert memory[12:14] == [True, False]
    assert memory[15] is True
    assert [(x.at, x.bytes_from_origin, x.bytes_from_peers) for x in memory[16]] == [
        (T0 + 9, 0, 0), (T0 + 19, 500, 0),
    ]  # fmt: skip
    assert [(e.source, e.message) for e in memory[18]] == [
        ("tracker", "x"), ("a", "e2"), ("a", "e1"),
    ]  # fmt: skip
    assert memory[19] == memory[18][:1]
    assert [t.repository for t in memory[23]] == ["library/r1", "library/r2"]
    assert memory[23][0] == tag(1, 9, T0 + 2)
    assert memory[24] == memory[23][:1]
    assert memory[26] == [tag(1, 9, T0 + 2)]  # forgetting a digest forgets its tags
    # details() is blob() for many digests at once (absent: nobody holds it)
    details = memory[28]
    assert sorted(details) == [d(1), d(2), d(3)]
    assert [(h.peer_id, h.complete) for h in details[d(1)].holders] == [
        ("b", False), ("c", False),
    ]  # fmt: skip
    assert [(h.peer_id, h.complete) for h in details[d(3)].holders] == [
        ("b", True), ("c", True),
    ]  # fmt: skip
    assert [h.peer_id for h in memory[30][d(3)].holders] == ["c"]  # b was banned


async def test_details_is_blob_for_each_digest(redis_store: RedisStore) -> None:
    for store in (MemoryStore(Policy()), redis_store):
        await store.announce(announce("a", ((1, 10),), held=(2,)), T0)
        await store.announce(announce("b", ((2, 5),), held=(1,)), T0 + 1)
        digests = [d(1), d(2), d(3)]
        details = await store.details(digests, T0 + 2)
        expected = {x: y for x in digests if (y := await store.blob(x, T0 + 2)) is not None}
        assert details == expected
        assert sorted(details) == [d(1), d(2)]


def test_scenario_announces_are_wire_valid() -> None:
    """Every announce above survives the codec (so the stores saw what peers can send)."""
    msg = announce("a", ((1, 10),), errors=("e1",))
    assert p.decode(p.Announce, p.encode(msg)) == msg
    assert dataclasses.replace(msg, errors=()) == p.decode(
        p.Announce, p.encode(dataclasses.replace(msg, errors=()))
    )


async def test_status_page_from_redis(redis_store: RedisStore) -> None:
    """The whole page is gathered from the Redis store as from memory (same HTML)."""
    now = T0 + 30

    async def page(store: Store) -> str:
        app = TrackerApp(store, clock=lambda: now)
        await store.announce(announce("a", ((1, 10),), held=(2,), errors=("e1",)), T0)
        await store.announce(announce("b", held=(2,), origin=50), T0 + 1)
        await store.put_tag(tag(1, 2, T0))  # held by a and b: synced
        await store.put_tag(tag(2, 9, T0))  # nobody holds d(9)
        await store.sample_traffic(T0 + 2, interval=10.0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/")
        assert response.status_code == 200
        return response.text

    memory = await page(MemoryStore(Policy(), rng=random.Random(0)))
    redis = await page(redis_store)
    assert redis == memory
    for text in ("<td>a, b</td>", "downloading: a", '<progress value="10" max="1000"',
                 "docker.io/library/r2:1", "<td>e1</td>", 'data-series="origin"'):  # fmt: skip
        assert text in redis, text
    assert "docker.io/library/r1:1" not in redis
