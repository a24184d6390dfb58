"""Run leases answer alike in the memory and Redis stores (a real redis-server).

Skipped only when ``redis-server`` is not installed (see ``conftest.redis_url``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tracker import protocol as p
from tracker.errors import TrackerError
from tracker.model import Policy
from tracker.redis_store import RedisStore
from tracker.store import MemoryStore, Store

S = b"s" * 16
T0 = 1_700_000_000.0
Op = Callable[[Store], Any]


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def announce(peer: str) -> p.Announce:
    return p.Announce(peer_id=peer, session=S, host="10.0.0.1", port=5051)


def run(peer: str, index: int, count: int, ttl: float = 10, n: int = 1) -> p.LeaseRequest:
    return p.LeaseRequest(
        digest=d(n), piece_index=index, peer_id=peer, session=S, ttl=ttl, count=count
    )


def record(peer: str, known: set[int], pieces: int = 12, n: int = 1) -> p.PieceHashes:
    hashes = tuple(bytes([1 + i % 7]) * 32 if i in known else b"" for i in range(pieces))
    return p.PieceHashes(
        digest=d(n), size=pieces << 14, piece_size=1 << 14, hashes=hashes, peer_id=peer
    )


def granted(peer: str, until: float, count: int) -> p.LeaseReply:
    return p.LeaseReply(granted=True, holder=peer, expires_at=until, count=count)


def held(peer: str, until: float) -> p.LeaseReply:
    return p.LeaseReply(granted=False, holder=peer, expires_at=until)


def lease(req: p.LeaseRequest, now: float) -> Op:
    return lambda s: s.lease(req, now)


# At most 2 origin fetches of one blob in flight: (operation, what both stores answer).
RUN_SCENARIO: list[tuple[Op, Any]] = [
    *[(lambda s, peer=peer: s.announce(announce(peer), T0), None) for peer in "abc"],
    (lease(run("a", 0, 8), T0), granted("a", T0 + 10, 8)),  # solo: a run
    (lease(run("b", 0, 4), T0 + 1), held("a", T0 + 10)),  # the run's head: held, count 1
    (lease(run("b", 8, 4), T0 + 1), granted("b", T0 + 11, 1)),  # a's fetch is in flight
    (
        lease(run("c", 20, 4), T0 + 1),
        p.LeaseReply(  # a's run counts once: 2 in flight
            granted=False, holder="a", expires_at=T0 + 10, capped=True
        ),
    ),
    (lease(run("a", 0, 8), T0 + 2), granted("a", T0 + 12, 8)),  # renewal of the run
    (lease(run("a", 3, 1, ttl=0), T0 + 2), granted("a", T0 + 2, 1)),  # a releases 3
    (lease(run("a", 0, 8), T0 + 3), granted("a", T0 + 13, 3)),  # renewal stops at 3
    # b records piece 8 and a piece 0: no fetch in flight, a's run stays a's
    (lambda s: s.put_pieces(record("b", {8})), None),
    (lambda s: s.put_pieces(record("a", {0, 10})), None),
    # solo again, but d(1)'s record has 12 pieces: no run past it
    (lease(run("c", 20, 4), T0 + 4), granted("c", T0 + 14, 1)),
    (lease(run("b", 3, 64), T0 + 5), granted("b", T0 + 15, 1)),  # c's fetch is in flight
    # a conflicting put (another size) still ends the writer's fetch of piece 20
    (lambda s: s.put_pieces(record("c", {20}, pieces=24)), None),
    (lambda s: s.put_pieces(record("c", {2}, pieces=12, n=2)), None),
    (lease(run("a", 11, 4), T0 + 6), granted("a", T0 + 16, 1)),  # b's 3 is in flight
    (lease(run("c", 0, 4, n=2), T0 + 6), granted("c", T0 + 16, 2)),  # stops at recorded 2
    # c's own fetch in flight does not stop c's run; the record ends it at 12
    (lease(run("c", 9, 64, n=2), T0 + 6), granted("c", T0 + 16, 3)),
    (lambda s: s.put_pieces(record("c", {0, 9}, n=2)), None),
    (lease(run("c", 3, 64, n=2), T0 + 7), granted("c", T0 + 17, 6)),  # 3..8, at c's 9
    (lease(run("c", 0, 64, n=2, ttl=0), T0 + 8), granted("c", T0 + 8, 64)),  # release all
    (lease(run("b", 0, 64, n=2), T0 + 8), granted("b", T0 + 18, 2)),  # 0, 1 (2 recorded)
    (lease(run("a", 4, 64, n=2), T0 + 8), granted("a", T0 + 18, 1)),  # b's 0 in flight
    (lambda s: s.stats(T0 + 8), None),
    # b leaves: its lease of d(2)'s piece 0 is dropped when asked for, but a run still
    # stops at its live lease of piece 1
    (lambda s: s.leave(p.Leave(peer_id="b", session=S), T0 + 9), None),
    (lease(run("a", 0, 64, n=2), T0 + 9), granted("a", T0 + 19, 1)),
    (lambda s: s.put_pieces(record("a", {0, 4}, n=2)), None),  # a's fetches are done
    # b's 1 is dropped when asked for as a run's first piece (2 is recorded)
    (lease(run("a", 1, 64, n=2), T0 + 9), granted("a", T0 + 19, 1)),
    (lease(run("a", 5, 64, n=2), T0 + 9), granted("a", T0 + 19, 4)),  # 5..8: 9 recorded
    (lease(run("a", p.MAX_PIECE_INDEX - 1, 64, n=3), T0 + 9), granted("a", T0 + 19, 2)),
    (lambda s: s.stats(T0 + 9), None),
    (lambda s: s.stats(T0 + 100), None),
]


async def both(policy: Policy, redis_url: str) -> tuple[MemoryStore, RedisStore]:
    return MemoryStore(policy), RedisStore.from_url(
        redis_url, policy, prefix=f"t{uuid.uuid4().hex[:8]}:"
    )


async def test_run_leases_alike_in_redis_and_memory(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=2), redis_url)
    try:
        for step, (op, expected) in enumerate(RUN_SCENARIO):
            m, r = await op(memory), await op(redis_store)
            assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
            if expected is not None:
                assert m == expected, f"step {step}: {m!r}"
    finally:
        await redis_store.aclose()


async def test_a_run_is_shortened_alike_at_max_leases(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_leases=5), redis_url)
    try:
        for store in (memory, redis_store):
            assert (await store.lease(run("a", 0, 8), T0)).count == 5
            with pytest.raises(TrackerError):
                await store.lease(run("a", 10, 8), T0)
            assert (await store.lease(run("a", 0, 8), T0 + 1)).count == 5
            assert (await store.lease(run("a", 2, 8, ttl=0), T0 + 1)).count == 8
            assert (await store.lease(run("a", 10, 8), T0 + 1)).count == 3  # 0, 1 left
            assert (await store.stats(T0 + 1)).leases == 5
    finally:
        await redis_store.aclose()


Tables = tuple[dict[str, tuple[str, float]], dict[str, dict[int, float]], set[str]]


def live_tables(memory: MemoryStore, now: float) -> Tables:
    """Memory's live leases ("digest#index" -> holder, expiry), live cap entries and the
    live leases that are soft ("digest#index")."""
    records = memory.registry.records
    leases = {
        f"{dg}#{i}": (peer, until) for (dg, i), (peer, until) in records._leases.items()
        if until > now
    }  # fmt: skip
    caps = {
        dg: {i: until for i, until in blob.items() if until > now}
        for dg, blob in records._blob_leases.items()
    }
    soft = {f"{dg}#{i}" for dg, indexes in records._soft.items() for i in indexes}
    return leases, {dg: blob for dg, blob in caps.items() if blob}, soft & leases.keys()


def redis_tables(store: RedisStore, now: float) -> Tables:
    """The same from Redis's keys."""
    r, prefix = store._r, store._p
    holders = r.hgetall(prefix + "lease_holder")
    leases = {
        m.decode(): (holders[m].decode(), until)
        for m, until in r.zrangebyscore(prefix + "leases", f"({now!r}", "+inf", withscores=True)
    }
    caps = {}
    for n in (1, 2):
        blob = r.zrangebyscore(prefix + "bl:" + d(n), f"({now!r}", "+inf", withscores=True)
        if blob:
            caps[d(n)] = {int(i): until for i, until in blob}
    soft = {m.decode() for m in r.smembers(prefix + "lease_soft")}
    return leases, caps, soft & leases.keys()


def m(index: int, n: int = 1) -> str:
    return f"{d(n)}#{index}"


# Soft pieces, at most 2 origin fetches of one blob in flight: (time, operation, what both
# stores answer, the live soft leases after it or None).
SOFT_SCENARIO: list[tuple[float, Op, Any, set[str] | None]] = [
    *[(T0, lambda s, peer=peer: s.announce(announce(peer), T0), None, None) for peer in "abcd"],
    (T0, lease(run("a", 0, 8), T0), granted("a", T0 + 10, 8), {m(i) for i in range(1, 8)}),
    # b takes a's soft 5: a hard lease with a cap entry, no run (a's head counts)
    (T0 + 1, lease(run("b", 5, 4), T0 + 1), granted("b", T0 + 11, 1),
     {m(i) for i in (1, 2, 3, 4, 6, 7)}),
    (T0 + 1, lease(run("c", 0, 4), T0 + 1), held("a", T0 + 10), None),  # a run's head is hard
    (T0 + 1, lease(run("c", 5, 1), T0 + 1), held("b", T0 + 11), None),  # so is a taken piece
    (T0 + 1, lease(run("c", 6, 1, ttl=0), T0 + 1), held("a", T0 + 10), None),  # no release
    # c is capped (a's run and b's 5 are in flight): a's soft 6 stays a's
    (T0 + 1, lease(run("c", 6, 1), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     {m(i) for i in (1, 2, 3, 4, 6, 7)}),
    # a records 2 and 3: hard now; b records 4 and 5: a's 4 stays soft (not b's to record)
    (T0 + 1, lambda s: s.put_pieces(record("a", {2, 3})), None, {m(i) for i in (1, 4, 6, 7)}),
    (T0 + 1, lambda s: s.put_pieces(record("b", {4, 5})), None, {m(i) for i in (1, 4, 6, 7)}),
    (T0 + 2, lease(run("c", 3, 1), T0 + 2), held("a", T0 + 10), None),  # recorded: kept
    # a renewal reports the cut at b's 5 and keeps 1 and 4 soft
    (T0 + 2, lease(run("a", 0, 8), T0 + 2), granted("a", T0 + 12, 5),
     {m(i) for i in (1, 4, 6, 7)}),
    (T0 + 3, lease(run("d", 4, 1), T0 + 3), granted("d", T0 + 13, 1), {m(i) for i in (1, 6, 7)}),
    (T0 + 3, lease(run("a", 0, 8), T0 + 3), granted("a", T0 + 13, 4), None),  # 0..3
    (T0 + 3, lease(run("a", 6, 2), T0 + 3), granted("a", T0 + 13, 2), {m(i) for i in (1, 6, 7)}),
    (T0 + 3, lease(run("a", 4, 1), T0 + 3), held("d", T0 + 13), None),
    # a release of the run releases its soft pieces too
    (T0 + 4, lease(run("a", 0, 8, ttl=0), T0 + 4), granted("a", T0 + 4, 8), set()),
    (T0 + 4, lease(run("d", 4, 1, ttl=0), T0 + 4), granted("d", T0 + 4, 1), set()),
    # solo again: c's run 6..9 is soft but for its head (d(1)'s record has 12 pieces)
    (T0 + 4, lease(run("c", 6, 4), T0 + 4), granted("c", T0 + 14, 4), {m(7), m(8), m(9)}),
    # c leaves: its soft 8 is dropped when asked for; c's head still counts, so no run
    (T0 + 5, lambda s: s.leave(p.Leave(peer_id="c", session=S), T0 + 5), None, None),
    (T0 + 5, lease(run("a", 8, 4), T0 + 5), granted("a", T0 + 15, 1), {m(7), m(9)}),
    (T0 + 5, lambda s: s.stats(T0 + 5), None, {m(7), m(9)}),
    (T0 + 20, lambda s: s.stats(T0 + 20), None, set()),  # expired and swept
]  # fmt: skip


async def test_soft_pieces_alike_in_redis_and_memory(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=2), redis_url)
    try:
        for step, (now, op, expected, soft) in enumerate(SOFT_SCENARIO):
            m_, r = await op(memory), await op(redis_store)
            assert m_ == r, f"step {step}: memory {m_!r} != redis {r!r}"
            if expected is not None:
                assert m_ == expected, f"step {step}: {m_!r}"
            tables = live_tables(memory, now)
            assert tables == await trio.to_thread.run_sync(redis_tables, redis_store, now)
            if soft is not None:
                assert tables[2] == soft, f"step {step}: {tables[2]}"
        records = memory.registry.records
        assert (records.lease_count, records._soft) == (0, {})
        soft_key = redis_store._p + "lease_soft"
        assert await trio.to_thread.run_sync(redis_store._r.exists, soft_key) == 0
    finally:
        await redis_store.aclose()


@pytest.mark.parametrize(("cap", "max_leases", "seed"), [(3, 25, 1), (0, 40, 2), (1, 1000, 3)])
async def test_random_lease_traffic_alike_in_redis_and_memory(
    redis_url: str, cap: int, max_leases: int, seed: int
) -> None:
    """Random leases, runs, releases, hash records, leaves and expiries: same answers, and
    the same live leases, cap entries and soft leases after every step."""
    rng = random.Random(seed)
    policy = Policy(max_origin_fetches=cap, max_leases=max_leases, min_announce_gap=0.0)
    memory, redis_store = await both(policy, redis_url)
    now = T0
    taken = 0  # soft pieces granted to another peer than their live holder
    try:
        for peer in "abc":
            await memory.announce(announce(peer), now)
            await redis_store.announce(announce(peer), now)
        for step in range(300):
            now += rng.choice([0.0, 0.0, 0.5, 1.0, 2.5])
            peer, n = rng.choice("aaabc"), rng.choice((1, 2))  # a often alone
            roll = rng.random()
            op: Op
            if roll < 0.75:
                count = rng.choice([1, 1, 2, 3, 5, 8, 64])
                ttl = rng.choice([0.0, 3.0, 10.0, 10.0])
                req = run(peer, rng.randrange(14), count, ttl=ttl, n=n)
                op = lease(req, now)
            elif roll < 0.9:
                known = {i for i in range(12) if rng.random() < 0.15}
                rec = record(peer, known, n=n)
                op = lambda s, rec=rec: s.put_pieces(rec)  # noqa: E731
            elif roll < 0.95:
                leave = p.Leave(peer_id=peer, session=S)
                op = lambda s, leave=leave, now=now: s.leave(leave, now)  # noqa: E731
            else:
                op = lambda s, peer=peer, now=now: s.announce(announce(peer), now)  # noqa: E731
            before = live_tables(memory, now)
            out = []
            for store in (memory, redis_store):
                try:
                    out.append(await op(store))
                except TrackerError as exc:
                    out.append(type(exc).__name__)
            assert out[0] == out[1], f"step {step}: memory {out[0]!r} != redis {out[1]!r}"
            redis_view = await trio.to_thread.run_sync(redis_tables, redis_store, now)
            after = live_tables(memory, now)
            assert after == redis_view, f"step {step}"
            taken += sum(
                1 for key in before[2] & after[0].keys() if before[0][key][0] != after[0][key][0]
            )
        # (with a cap of 1, a run's head in flight caps every other asker)
        assert taken > 0 or cap == 1
        assert await memory.stats(now + 400) == await redis_store.stats(now + 400)
    finally:
        await redis_store.aclose()


# Records whose msgpack header differs (the LEASE script walks it): size as a fixint, uint16,
# uint32 or uint64; piece size as uint16 or uint32; a fixarray or an array 16 of hashes.
@pytest.mark.parametrize(
    ("size", "piece_size", "known", "first", "expected"),
    [
        (1, 1 << 14, set(), 0, 1),  # one piece: the record ends the run
        (100, 1 << 14, set(), 0, 1),
        (3 << 14, 1 << 14, {2}, 0, 2),
        (40 << 14, 1 << 14, {30}, 25, 5),  # 25..29
        (40 << 14, 1 << 14, {30}, 31, 9),  # 31..39
        (40 << 14, 1 << 14, set(), 0, 40),
        ((1 << 32) + 1, 1 << 26, {10, 70}, 3, 7),  # 65 pieces: 3..9
        ((1 << 32) + 1, 1 << 26, {10}, 60, 5),  # 60..64
        ((1 << 32) + 1, 1 << 26, set(), 70, 1),  # past the record: the first piece only
    ],
)
async def test_runs_stop_alike_at_recorded_pieces(
    redis_url: str, size: int, piece_size: int, known: set[int], first: int, expected: int
) -> None:
    memory, redis_store = await both(Policy(), redis_url)
    pieces = -(-size // piece_size)
    hashes = tuple(b"\x05" * 32 if i in known else b"" for i in range(pieces))
    rec = p.PieceHashes(digest=d(1), size=size, piece_size=piece_size, hashes=hashes,
                        peer_id="z")  # fmt: skip
    try:
        replies = []
        for store in (memory, redis_store):
            await store.put_pieces(rec)
            replies.append(await store.lease(run("a", first, 64), T0))
        assert replies[0] == replies[1] == granted("a", T0 + 10, expected)
    finally:
        await redis_store.aclose()
