"""A recorded piece is refused (capped) while a live peer holds the blob complete, unless
the asker insists; alike in the memory and Redis stores (a real redis-server)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.tracker.test_lease_runs_stores import (
    Op,
    announce,
    both,
    d,
    granted,
    lease,
    record,
    run,
    step_alike,
)
from tracker import protocol as p
from tracker.model import Policy
from tracker.redis_store import RedisStore
from tracker.registry import Registry
from tracker.store import MemoryStore

S = b"s" * 16
T0 = 1_700_000_000.0
SIZE = 12 << 14


def complete(peer: str) -> p.Announce:
    return p.Announce(
        peer_id=peer, session=S, host="10.0.0.1", port=5051, held=(p.BlobHeld(d(1), SIZE),)
    )


def seeded(holder: str, now: float) -> p.LeaseReply:
    """Refused: take the piece from ``holder``, which holds the blob complete."""
    return p.LeaseReply(granted=False, holder=holder, expires_at=now, capped=True)


def insist(req: p.LeaseRequest) -> p.LeaseRequest:
    return p.LeaseRequest(
        digest=req.digest,
        piece_index=req.piece_index,
        peer_id=req.peer_id,
        session=req.session,
        ttl=req.ttl,
        count=req.count,
        insist=True,
    )


def step(now: float, fn: Op) -> tuple[float, Op, Any]:
    return (now, fn, None)


# (now, operation, what both stores answer); peer_ttl 30 s, cap 4.
SCENARIO: list[tuple[float, Op, Any]] = [
    *[step(T0, lambda s, peer=peer: s.announce(announce(peer), T0)) for peer in "abce"],
    (T0, lease(run("a", 0, 12), T0), granted("a", T0 + 10, 12)),
    # a records pieces 0..10 (11 stays unknown) and releases its run; it holds the blob
    step(T0, lambda s: s.put_pieces(record("a", set(range(11))))),
    (T0, lease(run("a", 0, 64, ttl=0), T0), granted("a", T0, 64)),
    step(T0 + 1, lambda s: s.announce(complete("a"), T0 + 1)),
    # the asker itself is the only complete holder: granted
    (T0 + 2, lease(run("a", 2, 1), T0 + 2), granted("a", T0 + 12, 1)),
    (T0 + 2, lease(run("a", 2, 1, ttl=0), T0 + 2), granted("a", T0 + 2, 1)),
    # a recorded piece: refused as capped, naming a, expires now; no contention
    (T0 + 2, lease(run("b", 3, 4), T0 + 2), seeded("a", T0 + 2)),
    # an unrecorded piece: granted (and renewed)
    (T0 + 2, lease(run("b", 11, 1), T0 + 2), granted("b", T0 + 12, 1)),
    (T0 + 2, lease(run("b", 11, 1), T0 + 2), granted("b", T0 + 12, 1)),
    # insist: granted, a full run (the refusal did not contend the blob)
    (T0 + 2, lease(insist(run("b", 3, 4)), T0 + 2), granted("b", T0 + 12, 4)),
    # b's renewal of its own lease of a recorded piece is never refused
    (T0 + 3, lease(run("b", 3, 4), T0 + 3), granted("b", T0 + 13, 4)),
    # two complete holders: the smallest id other than the asker
    step(T0 + 3, lambda s: s.announce(complete("c"), T0 + 3)),
    (T0 + 3, lease(run("b", 8, 1), T0 + 3), seeded("a", T0 + 3)),
    (T0 + 3, lease(run("a", 8, 1), T0 + 3), seeded("c", T0 + 3)),
    # a leaves: c; c drained: nobody (granted)
    step(T0 + 4, lambda s: s.leave(p.Leave(peer_id="a", session=S), T0 + 4)),
    (T0 + 4, lease(run("b", 8, 1), T0 + 4), seeded("c", T0 + 4)),
    step(T0 + 4, lambda s: s.drain("c", T0 + 4)),
    (T0 + 4, lease(run("b", 8, 1), T0 + 4), granted("b", T0 + 14, 1)),
    # e holds it complete until its announces stop (peer_ttl 30 s)
    step(T0 + 5, lambda s: s.announce(complete("e"), T0 + 5)),
    (T0 + 5, lease(run("b", 9, 1), T0 + 5), seeded("e", T0 + 5)),
    step(T0 + 30, lambda s: s.announce(announce("b"), T0 + 30)),
    (T0 + 36, lease(run("b", 9, 1), T0 + 36), granted("b", T0 + 46, 1)),
]  # fmt: skip


async def test_recorded_pieces_of_a_complete_blob_alike_in_redis_and_memory(
    redis_url: str,
) -> None:
    policy = Policy(max_origin_fetches=4, peer_ttl=30.0, min_announce_gap=0.0)
    memory, redis_store = await both(policy, redis_url)
    try:
        for i, (now, op, expected) in enumerate(SCENARIO):
            tables = await step_alike(memory, redis_store, i, now, op, expected)
            assert tables[4] == {}, f"step {i}: contended {tables[4]}"  # never contended
    finally:
        await redis_store.aclose()


async def test_piece_record_encodings_alike(redis_url: str) -> None:
    """Piece ``i``'s hash is found past a 16-bit array header and 32-bit sizes."""
    policy = Policy(max_origin_fetches=0)
    memory = MemoryStore(policy)
    redis_store = RedisStore.from_url(redis_url, policy, prefix=f"t{uuid.uuid4().hex[:8]}:")
    pieces = 1000  # a 16-bit array header; 2**20 B pieces
    known = {0, 15, 16, 999}
    hashes = tuple(b"\x07" * 32 if i in known else b"" for i in range(pieces))
    big = p.PieceHashes(
        digest=d(1), size=pieces << 20, piece_size=1 << 20, hashes=hashes, peer_id="z"
    )
    small = record("z", {0, 11}, n=2)  # a fixarray header
    try:
        for store in (memory, redis_store):
            for peer in "ab":
                await store.announce(announce(peer), T0)
            await store.announce(
                p.Announce(
                    peer_id="z",
                    session=S,
                    host="10.0.0.1",
                    port=5051,
                    held=(p.BlobHeld(d(1), pieces << 20), p.BlobHeld(d(2), SIZE)),
                ),
                T0,
            )
            assert (await store.put_pieces(big)).stored
            assert (await store.put_pieces(small)).stored
        for n, index, recorded in [
            (1, 0, True),
            (1, 1, False),
            (1, 15, True),
            (1, 16, True),
            (1, 998, False),
            (1, 999, True),
            (2, 0, True),
            (2, 10, False),
            (2, 11, True),
            (2, 12, False),
        ]:
            req = p.LeaseRequest(digest=d(n), piece_index=index, peer_id="b", session=S, ttl=5)
            replies = [await s.lease(req, T0 + 1) for s in (memory, redis_store)]
            expected = seeded("z", T0 + 1) if recorded else granted("b", T0 + 6, 1)
            assert replies == [expected, expected], (n, index)
            await memory.lease(p.LeaseRequest(digest=d(n), piece_index=index, peer_id="b",
                                              session=S, ttl=0), T0 + 1)  # fmt: skip
            await redis_store.lease(p.LeaseRequest(digest=d(n), piece_index=index, peer_id="b",
                                                   session=S, ttl=0), T0 + 1)  # fmt: skip
    finally:
        await redis_store.aclose()


def test_registry_refuses_a_recorded_piece_of_a_complete_blob() -> None:
    """Memory only: the smallest live complete holder, insist, and cap order."""
    registry = Registry(Policy(max_origin_fetches=1, min_announce_gap=0.0))
    for peer in "abc":
        registry.announce(announce(peer), T0)
    registry.records.put_pieces(record("z", set(range(12))))
    assert registry.lease(run("a", 0, 1), T0).granted  # nobody holds it complete yet
    registry.announce(complete("c"), T0)
    registry.announce(complete("b"), T0)
    # the complete refusal comes before the cap (a's piece 0 fills it) and names b
    assert registry.lease(run("a", 5, 1), T0 + 1) == seeded("b", T0 + 1)
    assert registry.lease(run("b", 5, 1), T0 + 1) == seeded("c", T0 + 1)
    assert registry.records._contended == {}
    # insisting: the cap applies as ever (and contends)
    assert registry.lease(insist(run("b", 5, 1)), T0 + 1).holder == "a"
    assert registry.lease(insist(run("b", 5, 1)), T0 + 1).capped
    assert registry.records._contended == {d(1): {"b": T0 + 11}}
    registry.lease(run("a", 0, 1, ttl=0), T0 + 1)
    # b's own refusal does not contend for b: a run
    assert registry.lease(insist(run("b", 5, 3)), T0 + 2) == granted("b", T0 + 12, 3)
