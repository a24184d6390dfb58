"""The Redis store against a real redis-server: parity with memory, replicas agree.

Skipped only when ``redis-server`` is not installed (see ``conftest.redis_url``).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import trio

from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.config import TrackerConfig
from tracker.errors import TrackerError
from tracker.model import Policy
from tracker.redis_store import RedisStore
from tracker.registry import LOOKUP_SAMPLE
from tracker.service import serve
from tracker.store import MemoryStore, Store

S = b"s" * 16
OTHER = b"o" * 16
T0 = 1_700_000_000.0
MSGPACK = {"content-type": p.MEDIA_TYPE}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def announce(
    peer: str,
    held: tuple[int, ...] = (),
    partial: tuple[tuple[int, int], ...] = (),
    *,
    load: int = 0,
    session: bytes = S,
) -> p.Announce:
    return p.Announce(
        peer_id=peer,
        session=session,
        host=f"10.0.0.{ord(peer[0])}",
        port=5051,
        held=tuple(p.BlobHeld(d(n), 1000) for n in held),
        in_progress=tuple(p.BlobInProgress(d(n), 1000, got) for n, got in partial),
        upload_slots=4,
        load=load,
        bytes_served=len(peer),
    )


def pieces(n: int, fill: int, peer: str = "a") -> p.PieceHashes:
    return p.PieceHashes(
        digest=d(n),
        size=2 << 14,
        piece_size=1 << 14,
        hashes=(bytes([fill]) * 32,) * 2,
        peer_id=peer,
    )


def partial(n: int, known: dict[int, int], peer: str = "a", count: int = 4) -> p.PieceHashes:
    """A record of ``count`` pieces where only ``known`` (index -> fill byte) is filled."""
    return p.PieceHashes(
        digest=d(n),
        size=count << 14,
        piece_size=1 << 14,
        hashes=tuple(bytes([known[i]]) * 32 if i in known else b"" for i in range(count)),
        peer_id=peer,
    )


TAG = p.TagRecord(
    registry="docker.io", repository="library/x", tag="1", accept="", digest=d(2),
    media_type="application/json", size=7, resolved_at=T0,
)  # fmt: skip
TAG_KEY = p.TagQuery(registry="docker.io", repository="library/x", tag="1", accept="")

Op = Callable[[Store], Any]


def lease(peer: str, index: int, ttl: float, session: bytes = S) -> p.LeaseRequest:
    return p.LeaseRequest(digest=d(1), piece_index=index, peer_id=peer, session=session, ttl=ttl)


def look(n: int, asker: str, now: float) -> Op:
    return lambda s: s.lookup(p.Lookup(digest=d(n), peer_id=asker, limit=64), now)


SCENARIO: list[Op] = [
    lambda s: s.announce(announce("a", (1, 2), ((3, 10),)), T0),
    lambda s: s.announce(announce("b", (1,), load=4), T0 + 0.1),
    lambda s: s.announce(announce("c", (2,), ((1, 50),)), T0 + 0.2),
    look(1, "a", T0 + 1),
    look(3, "x", T0 + 1),
    look(9, "x", T0 + 1),
    lambda s: s.announce(announce("a", (1,), session=OTHER), T0 + 2),  # conflict
    lambda s: s.announce(announce("a", (1,)), T0 + 0.05),  # too soon
    lambda s: s.announce(announce("a", (1, 3), ((2, 5),)), T0 + 2),  # 3 done, 2 replaced
    look(2, "x", T0 + 2),
    look(3, "x", T0 + 2),
    lambda s: s.drain("b", T0 + 3),
    lambda s: s.drain("nobody", T0 + 3),
    look(1, "x", T0 + 3),
    lambda s: s.lease(lease("a", 0, 10), T0 + 3),
    lambda s: s.lease(lease("c", 0, 10), T0 + 4),
    lambda s: s.lease(lease("a", 0, 10, session=OTHER), T0 + 4),
    lambda s: s.lease(lease("a", 0, 0), T0 + 4),
    lambda s: s.lease(lease("c", 0, 10), T0 + 4),
    lambda s: s.put_pieces(pieces(1, 1)),
    lambda s: s.put_pieces(pieces(1, 1, peer="b")),
    lambda s: s.put_pieces(pieces(1, 2)),
    lambda s: s.get_pieces(d(1)),
    lambda s: s.get_pieces(d(9)),
    lambda s: s.put_tag(TAG),
    lambda s: s.put_tag(dataclasses.replace(TAG, digest=d(3))),
    lambda s: s.get_tag(TAG_KEY),
    lambda s: s.peers(T0 + 5, offset=0, limit=100),
    lambda s: s.peers(T0 + 5, offset=1, limit=1),
    lambda s: s.blobs(T0 + 5, offset=0, limit=100),
    lambda s: s.blob(d(1), T0 + 5),
    lambda s: s.blob(d(9), T0 + 5),
    lambda s: s.transfers(T0 + 5, limit=10),
    lambda s: s.stats(T0 + 5),
    lambda s: s.forget(d(2)),
    lambda s: s.forget(d(2)),
    lambda s: s.get_tag(TAG_KEY),
    lambda s: s.blob(d(2), T0 + 6),
    lambda s: s.stats(T0 + 6),
    lambda s: s.ban("c", T0 + 6),
    lambda s: s.announce(announce("c", (2,)), T0 + 7),  # banned
    lambda s: s.leave(p.Leave(peer_id="a", session=OTHER), T0 + 7),  # conflict
    lambda s: s.leave(p.Leave(peer_id="a", session=S), T0 + 7),
    lambda s: s.stats(T0 + 7),
    lambda s: s.announce(announce("d", (5,)), T0 + 8),
    look(5, "x", T0 + 8 + 89.9),
    look(5, "x", T0 + 8 + 90),  # expired at exactly the TTL
    lambda s: s.sweep(T0 + 200),
    lambda s: s.stats(T0 + 200),
    lambda s: s.blobs(T0 + 200, offset=0, limit=10),
]


def normalise(result: Any) -> Any:
    if isinstance(result, p.LookupReply):  # order within a tier is random: compare sets
        return (result.digest, result.size, sorted(result.peers, key=lambda a: a.peer_id))
    return result


async def run(store: Store) -> list[Any]:
    out = []
    for op in SCENARIO:
        try:
            out.append(normalise(await op(store)))
        except TrackerError as exc:
            out.append(type(exc).__name__)
    return out


async def test_redis_and_memory_stores_agree_step_by_step(redis_store: RedisStore) -> None:
    memory = await run(MemoryStore(Policy(), rng=random.Random(0)))
    redis = await run(redis_store)
    for step, (m, r) in enumerate(zip(memory, redis, strict=True)):
        assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
    # The scenario really exercises the refusals and the views.
    assert {"PeerConflict", "TooManyRequests", "PeerBanned"} <= {
        x for x in memory if isinstance(x, str)
    }
    assert memory[-2].peers == 0


# Piece records merge per piece: (operation, what both stores must answer).
STORED, SAME, CONFLICT = (
    p.PiecesPutReply(stored=True),
    p.PiecesPutReply(stored=False),
    p.PiecesPutReply(stored=False, conflict=True),
)
MERGED = dataclasses.replace(partial(1, {0: 1, 1: 2, 2: 3}, count=3), size=(3 << 14) - 7)
PIECES_SCENARIO: list[tuple[Op, Any]] = [
    (lambda s: s.put_pieces(partial(1, {1: 2})), STORED),  # created partial
    (lambda s: s.get_pieces(d(1)), partial(1, {1: 2})),
    (lambda s: s.put_pieces(partial(1, {0: 1, 3: 4}, peer="b")), STORED),  # others filled
    (lambda s: s.put_pieces(partial(1, {0: 1}, peer="c")), SAME),  # same value again
    (lambda s: s.put_pieces(partial(1, {}, peer="c")), SAME),  # nothing known
    (lambda s: s.put_pieces(partial(1, {1: 9}, peer="c")), CONFLICT),  # known piece differs
    (lambda s: s.get_pieces(d(1)), partial(1, {0: 1, 1: 2, 3: 4})),  # unchanged; first writer
    (  # a put may fill one piece and conflict on another
        lambda s: s.put_pieces(partial(1, {2: 3, 3: 9}, peer="c")),
        p.PiecesPutReply(stored=True, conflict=True),
    ),
    (lambda s: s.get_pieces(d(1)), partial(1, {0: 1, 1: 2, 2: 3, 3: 4})),
    (lambda s: s.put_pieces(partial(1, {0: 1, 1: 2, 2: 3, 3: 4}, peer="d")), SAME),
    (lambda s: s.put_pieces(partial(1, {0: 1, 1: 2, 2: 3}, count=3)), CONFLICT),  # size
    (
        lambda s: s.put_pieces(
            dataclasses.replace(partial(1, {0: 1}, count=2), piece_size=2 << 14)
        ),
        CONFLICT,  # piece size (same piece count)
    ),
    (lambda s: s.get_pieces(d(1)), partial(1, {0: 1, 1: 2, 2: 3, 3: 4})),
    # A partial record, then a full one of another size: a conflict as a whole.
    (lambda s: s.put_pieces(partial(2, {1: 2})), STORED),
    (lambda s: s.put_pieces(dataclasses.replace(MERGED, digest=d(2))), CONFLICT),
    (lambda s: s.get_pieces(d(2)), partial(2, {1: 2})),
    # Partial puts (an empty one first), then the full record; the last piece is short.
    (lambda s: s.put_pieces(dataclasses.replace(MERGED, digest=d(3), hashes=(b"",) * 3)), STORED),
    (
        lambda s: s.put_pieces(
            dataclasses.replace(MERGED, digest=d(3), hashes=(b"", b"\2" * 32, b""))
        ),
        STORED,
    ),
    (lambda s: s.put_pieces(dataclasses.replace(MERGED, digest=d(3), peer_id="z")), STORED),
    (lambda s: s.get_pieces(d(3)), dataclasses.replace(MERGED, digest=d(3))),
    (lambda s: s.put_pieces(dataclasses.replace(MERGED, digest=d(3), peer_id="z")), SAME),
    (lambda s: s.get_pieces(d(9)), None),
]


async def test_piece_records_merge_alike_in_redis_and_memory(redis_store: RedisStore) -> None:
    memory = MemoryStore(Policy())
    for step, (op, expected) in enumerate(PIECES_SCENARIO):
        m, r = await op(memory), await op(redis_store)
        assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
        if expected is not None:
            assert m == expected, f"step {step}: {m!r}"
    conflicts = await trio.to_thread.run_sync(redis_store._r.hgetall, redis_store._p + "conflicts")
    assert {k.decode(): int(v) for k, v in conflicts.items()} == memory.registry.records.conflicts
    assert memory.registry.records.conflicts == {d(1): 4, d(2): 1}


def capped(holder: str, until: float) -> p.LeaseReply:
    return p.LeaseReply(granted=False, holder=holder, expires_at=until, capped=True)


def granted(peer: str, until: float) -> p.LeaseReply:
    return p.LeaseReply(granted=True, holder=peer, expires_at=until)


def blob_lease(peer: str, n: int, index: int, ttl: float) -> p.LeaseRequest:
    return p.LeaseRequest(digest=d(n), piece_index=index, peer_id=peer, session=S, ttl=ttl)


# At most 2 origin fetches of one blob in flight: (operation, what both stores answer).
CAP_SCENARIO: list[tuple[Op, Any]] = [
    *[(lambda s, peer=peer: s.announce(announce(peer), T0), None) for peer in "abcd"],
    (lambda s: s.lease(blob_lease("a", 1, 0, 10), T0), granted("a", T0 + 10)),
    (lambda s: s.lease(blob_lease("b", 1, 1, 5), T0 + 1), granted("b", T0 + 6)),
    # the cap: named after the lease that ends first (b's), whoever asks for what
    (lambda s: s.lease(blob_lease("c", 1, 2, 10), T0 + 2), capped("b", T0 + 6)),
    (lambda s: s.lease(blob_lease("a", 1, 2, 10), T0 + 2), capped("b", T0 + 6)),
    # a piece leased to someone else is refused as held, not capped
    (
        lambda s: s.lease(blob_lease("c", 1, 0, 10), T0 + 2),
        p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10),
    ),
    (lambda s: s.lease(blob_lease("c", 2, 0, 10), T0 + 2), granted("c", T0 + 12)),  # other blob
    (lambda s: s.lease(blob_lease("a", 1, 0, 10), T0 + 3), granted("a", T0 + 13)),  # renewal
    (lambda s: s.lease(blob_lease("b", 1, 1, 0), T0 + 4), granted("b", T0 + 4)),  # release
    (lambda s: s.lease(blob_lease("c", 1, 2, 10), T0 + 4), granted("c", T0 + 14)),  # room
    (lambda s: s.lease(blob_lease("b", 1, 3, 10), T0 + 5), capped("a", T0 + 13)),
    (lambda s: s.lease(blob_lease("b", 1, 3, 10), T0 + 13), granted("b", T0 + 23)),  # a's ran out
    # a's lease expired and renewing it is a new lease: capped now
    (lambda s: s.lease(blob_lease("a", 1, 0, 10), T0 + 13.5), capped("c", T0 + 14)),
    # c records piece 2's hash: its fetch is done, a slot frees, the piece stays c's
    (lambda s: s.put_pieces(partial(1, {2: 7}, peer="c")), None),
    (lambda s: s.lease(blob_lease("a", 1, 0, 10), T0 + 13.5), granted("a", T0 + 23.5)),
    (
        lambda s: s.lease(blob_lease("a", 1, 2, 10), T0 + 13.5),
        p.LeaseReply(granted=False, holder="c", expires_at=T0 + 14),
    ),
    (lambda s: s.put_pieces(partial(1, {3: 7}, peer="a")), None),  # not a's lease: no change
    (lambda s: s.lease(blob_lease("d", 1, 4, 10), T0 + 13.5), capped("b", T0 + 23)),
    (lambda s: s.stats(T0 + 13.5), None),
    # a leaves: its lease of piece 0 refuses nobody any more (and frees a slot of the cap)
    (lambda s: s.leave(p.Leave(peer_id="a", session=S), T0 + 14), None),
    (lambda s: s.lease(blob_lease("d", 1, 0, 10), T0 + 14), granted("d", T0 + 24)),
    (
        lambda s: s.lease(blob_lease("b", 1, 0, 10), T0 + 14),
        p.LeaseReply(granted=False, holder="d", expires_at=T0 + 24),
    ),
    (lambda s: s.stats(T0 + 14), None),
]


async def test_origin_fetch_cap_alike_in_redis_and_memory(redis_url: str) -> None:
    policy = Policy(max_origin_fetches=2)
    redis_store = RedisStore.from_url(redis_url, policy, prefix=f"t{uuid.uuid4().hex[:8]}:")
    memory = MemoryStore(policy)
    try:
        for step, (op, expected) in enumerate(CAP_SCENARIO):
            m, r = await op(memory), await op(redis_store)
            assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
            if expected is not None:
                assert m == expected, f"step {step}: {m!r}"
    finally:
        await redis_store.aclose()


async def test_piece_records_cost_the_same_partial_and_filling_refreshes_them(
    redis_url: str,
) -> None:
    policy = Policy(max_piece_bytes=2 * (256 + 32 * 4))
    redis_store = RedisStore.from_url(redis_url, policy, prefix=f"t{uuid.uuid4().hex[:8]}:")
    stores: list[Store] = [MemoryStore(policy), redis_store]
    try:
        for store in stores:
            await store.put_pieces(partial(0, {}))  # nothing known: the full cost already
            await store.put_pieces(partial(1, {0: 1, 1: 1}))
            assert (await store.put_pieces(partial(0, {3: 3}))).stored  # d(0) is now newest
            assert (await store.stats(T0)).piece_records == 2  # filling evicted nobody
            await store.put_pieces(partial(2, {0: 1}))  # evicts d(1), least recently updated
            present = [await store.get_pieces(d(n)) is not None for n in range(3)]
            assert present == [True, False, True], store.kind
        used = await trio.to_thread.run_sync(redis_store._r.get, redis_store._p + "piece_bytes")
        assert int(used) == 2 * (256 + 32 * 4)
    finally:
        await redis_store.aclose()


async def test_redis_lookup_ranks_like_memory(redis_store: RedisStore) -> None:
    await redis_store.announce(announce("s", (1,), load=4), T0)
    await redis_store.announce(announce("p", (), ((1, 5),)), T0)
    await redis_store.announce(announce("b", (1,), load=1), T0)
    await redis_store.announce(announce("i", (1,)), T0)
    reply = await redis_store.lookup(p.Lookup(digest=d(1), peer_id="x", limit=3), T0 + 1)
    assert [a.peer_id for a in reply.peers] == ["i", "b", "p"]


async def test_unreachable_redis_is_a_503_not_a_500(tmp_path: Any) -> None:
    store = RedisStore.from_url(f"unix://{tmp_path}/absent.sock")
    app = TrackerApp(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/announce", content=p.encode(announce("a", (1,))), headers=MSGPACK)
        assert (r.status_code, r.json()["error"]) == (503, "store_unavailable")
        assert (await c.get("/healthz")).status_code == 503
        assert (await c.get("/admin/peers")).status_code == 503


async def test_two_replicas_on_one_redis_agree(redis_url: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}:"
    config = TrackerConfig(listen_host="127.0.0.1", listen_port=0, mdns=False, admin_token="t")
    stop = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ports = []
            for _ in range(2):
                store = RedisStore.from_url(redis_url, prefix=prefix)
                start = functools.partial(serve, config, shutdown_trigger=stop.wait, store=store)
                ports.append(await nursery.start(start))
            a, b = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") for port in ports)
            async with a, b:
                for name, client in (("one", a), ("two", b)):
                    r = await client.post(
                        "/v1/announce", content=p.encode(announce(name, (1,))), headers=MSGPACK
                    )
                    assert r.status_code == 200
                for client in (a, b):
                    q = p.Lookup(digest=d(1), peer_id="x", limit=8)
                    r = await client.post("/v1/lookup", content=p.encode(q), headers=MSGPACK)
                    assert sorted(x.peer_id for x in p.decode(p.LookupReply, r.content).peers) == [
                        "one",
                        "two",
                    ]
                # A lease taken through one replica is held against the other.
                r = await a.post(
                    "/v1/lease", content=p.encode(lease("one", 0, 30)), headers=MSGPACK
                )
                assert p.decode(p.LeaseReply, r.content).granted
                r = await b.post(
                    "/v1/lease", content=p.encode(lease("two", 0, 30)), headers=MSGPACK
                )
                assert p.decode(p.LeaseReply, r.content).holder == "one"
                # Piece hashes put through both replicas merge into one record.
                for client, record in ((a, partial(1, {0: 1}, "one")), (b, partial(1, {2: 3}))):
                    r = await client.post("/v1/pieces", content=p.encode(record), headers=MSGPACK)
                    assert p.decode(p.PiecesPutReply, r.content).stored
                for client in (a, b):
                    q2 = p.PiecesQuery(digest=d(1))
                    r = await client.post("/v1/pieces/query", content=p.encode(q2), headers=MSGPACK)
                    assert p.decode(p.PieceHashes, r.content) == partial(1, {0: 1, 2: 3}, "one")
                # An admin drain through one replica hides the peer on the other.
                r = await b.post("/admin/peers/one/drain", headers={"authorization": "Bearer t"})
                assert r.status_code == 200
                q = p.Lookup(digest=d(1), peer_id="x", limit=8)
                r = await a.post("/v1/lookup", content=p.encode(q), headers=MSGPACK)
                assert [x.peer_id for x in p.decode(p.LookupReply, r.content).peers] == ["two"]
                assert (await a.get("/admin/peers")).json() == (await b.get("/admin/peers")).json()
                assert (await b.get("/healthz")).json() == {"status": "ok", "store": "redis"}
            stop.set()


async def test_redis_lookup_samples_a_large_swarm(redis_store: RedisStore) -> None:
    for i in range(LOOKUP_SAMPLE + 100):
        await redis_store.announce(announce(f"p{i}", (1,), load=1), T0)
    await redis_store.announce(announce("partial", (), ((1, 7),)), T0)
    seen: set[str] = set()
    for _ in range(20):
        reply = await redis_store.lookup(p.Lookup(digest=d(1), peer_id="p0", limit=16), T0 + 1)
        ids = [a.peer_id for a in reply.peers]
        assert len(ids) == len(set(ids)) == 16
        assert "p0" not in ids
        seen.update(ids)
    assert len(seen) > 100, "different askers get different samples"
