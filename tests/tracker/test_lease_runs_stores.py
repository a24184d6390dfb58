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
    # b records piece 8 and a pieces 0..2 (3 it released): no fetch in flight, a's run stays
    # a's
    (lambda s: s.put_pieces(record("b", {8})), None),
    (lambda s: s.put_pieces(record("a", {0, 1, 2, 10})), None),
    # solo again, but d(1)'s record has 12 pieces: no run past it
    (lease(run("c", 20, 4), T0 + 4), granted("c", T0 + 14, 1)),
    (lease(run("b", 3, 64), T0 + 5), granted("b", T0 + 15, 1)),  # c's fetch is in flight
    # a conflicting put (another size) still ends the writer's fetch of piece 20
    (lambda s: s.put_pieces(record("c", {20}, pieces=24)), None),
    (lambda s: s.put_pieces(record("c", {2}, pieces=12, n=2)), None),
    (lease(run("a", 11, 4), T0 + 6), granted("a", T0 + 16, 1)),  # b's 3 is in flight
    (lease(run("c", 0, 4, n=2), T0 + 6), granted("c", T0 + 16, 4)),  # over recorded 2
    # c's own fetch in flight does not stop c's run; the record ends it at 12
    (lease(run("c", 9, 64, n=2), T0 + 6), granted("c", T0 + 16, 3)),
    # c's first run is done; its second's head is recorded: its cap entry moves on to 10
    (lambda s: s.put_pieces(record("c", {0, 1, 2, 3, 9}, n=2)), None),
    (lease(run("c", 4, 64, n=2), T0 + 7), granted("c", T0 + 17, 5)),  # 4..8, at c's 9
    (lease(run("c", 0, 64, n=2, ttl=0), T0 + 8), granted("c", T0 + 8, 64)),  # release all
    (lease(run("b", 0, 2, n=2), T0 + 8), granted("b", T0 + 18, 2)),  # 0, 1
    (lease(run("a", 4, 64, n=2), T0 + 8), granted("a", T0 + 18, 1)),  # b's 0 in flight
    (lambda s: s.stats(T0 + 8), None),
    # b leaves: its lease of d(2)'s piece 0 is dropped when asked for, and so is its live
    # lease of piece 1 by the run (b is gone): 0..3, at a's own 4
    (lambda s: s.leave(p.Leave(peer_id="b", session=S), T0 + 9), None),
    (lease(run("a", 0, 64, n=2), T0 + 9), granted("a", T0 + 19, 4)),
    (lambda s: s.put_pieces(record("a", {0, 4}, n=2)), None),  # a's fetches are done
    # a renewal from 1: a's 1..4 (its recorded 4 too), at the unleased 5
    (lease(run("a", 1, 64, n=2), T0 + 9), granted("a", T0 + 19, 4)),
    (lease(run("a", 5, 64, n=2), T0 + 9), granted("a", T0 + 19, 7)),  # 5..11: the record
    (lease(run("a", p.MAX_PIECE_INDEX - 1, 64, n=3), T0 + 9), granted("a", T0 + 19, 2)),
    (lambda s: s.stats(T0 + 9), None),
    (lambda s: s.stats(T0 + 100), None),
]


async def both(policy: Policy, redis_url: str) -> tuple[MemoryStore, RedisStore]:
    return MemoryStore(policy), RedisStore.from_url(
        redis_url, policy, prefix=f"t{uuid.uuid4().hex[:8]}:"
    )


async def step_alike(
    memory: MemoryStore, redis_store: RedisStore, step: int, now: float, op: Op, expected: Any
) -> Tables:
    """Run ``op`` on both stores: the same answer (``expected`` unless None) and the same
    lease tables at ``now`` afterwards, which are returned."""
    m, r = await op(memory), await op(redis_store)
    assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
    if expected is not None:
        assert m == expected, f"step {step}: {m!r}"
    tables = live_tables(memory, now)
    assert tables == await trio.to_thread.run_sync(redis_tables, redis_store, now)
    return tables


async def test_run_leases_alike_in_redis_and_memory(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=2), redis_url)
    try:
        for step, (op, expected) in enumerate(RUN_SCENARIO):
            m, r = await op(memory), await op(redis_store)
            assert m == r, f"step {step}: memory {m!r} != redis {r!r}"
            if expected is not None:
                assert m == expected, f"step {step}: {m!r}"
            if step < len(RUN_SCENARIO) - 1:  # (all but the last step are by T0 + 9)
                tables = live_tables(memory, T0 + 9)
                redis_view = await trio.to_thread.run_sync(redis_tables, redis_store, T0 + 9)
                assert tables == redis_view, f"step {step}"
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


Tables = tuple[
    dict[str, tuple[str, float]],
    dict[str, dict[int, float]],
    set[str],
    set[str],
    dict[str, dict[str, float]],
]


def live_tables(memory: MemoryStore, now: float) -> Tables:
    """Memory's live leases ("digest#index" -> holder, expiry), live cap entries and the
    live leases that are soft and wanted ("digest#index"), and the contended marks (digest ->
    refused peer -> until, those not ended)."""
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
    wanted = {f"{dg}#{i}" for dg, indexes in records._wanted.items() for i in indexes}
    live = leases.keys()
    contended = {
        dg: {peer: until for peer, until in marks.items() if until > now}
        for dg, marks in records._contended.items()
    }
    contended = {dg: marks for dg, marks in contended.items() if marks}
    caps = {dg: blob for dg, blob in caps.items() if blob}
    return leases, caps, soft & live, wanted & live, contended


def redis_tables(store: RedisStore, now: float) -> Tables:
    """The same from Redis's keys."""
    r, prefix = store._r, store._p
    holders = r.hgetall(prefix + "lease_holder")
    leases = {
        m.decode(): (holders[m].decode(), until)
        for m, until in r.zrangebyscore(prefix + "leases", f"({now!r}", "+inf", withscores=True)
    }
    caps = {}
    for n in (1, 2, 3):
        blob = r.zrangebyscore(prefix + "bl:" + d(n), f"({now!r}", "+inf", withscores=True)
        if blob:
            caps[d(n)] = {int(i): until for i, until in blob}
    soft = {m.decode() for m in r.smembers(prefix + "lease_soft")}
    wanted = {m.decode() for m in r.smembers(prefix + "lease_wanted")}
    contended = {}
    for dg in r.zrangebyscore(prefix + "lease_contended", f"({now!r}", "+inf"):
        marks = r.zrangebyscore(prefix + "lc:" + dg.decode(), f"({now!r}", "+inf", withscores=True)
        if marks:
            contended[dg.decode()] = {peer.decode(): until for peer, until in marks}
    return leases, caps, soft & leases.keys(), wanted & leases.keys(), contended


def m(index: int, n: int = 1) -> str:
    return f"{d(n)}#{index}"


def refused(peer: str, now: float) -> p.LeaseReply:
    """A soft piece's refusal: held by ``peer``, ask again soon."""
    return p.LeaseReply(granted=False, holder=peer, expires_at=now)


# Soft pieces, at most 2 origin fetches of one blob in flight: (time, operation, what both
# stores answer, the live (soft, wanted) leases after it or None).
SOFT_SCENARIO: list[tuple[float, Op, Any, tuple[set[str], set[str]] | None]] = [
    *[(T0, lambda s, peer=peer: s.announce(announce(peer), T0), None, None) for peer in "abcd"],
    (T0, lease(run("a", 0, 8), T0), granted("a", T0 + 10, 8), ({m(i) for i in range(1, 8)}, set())),
    # b asks for a's soft 5: refused for now (expires_at == now), 5 is wanted
    (T0 + 1, lease(run("b", 5, 4), T0 + 1), refused("a", T0 + 1),
     ({m(i) for i in range(1, 8)}, {m(5)})),
    (T0 + 1, lease(run("c", 0, 4), T0 + 1), held("a", T0 + 10), None),  # a run's head is hard
    (T0 + 1, lease(run("c", 6, 1, ttl=0), T0 + 1), held("a", T0 + 10), None),  # no release
    (T0 + 1, lease(run("b", 20, 1), T0 + 1), granted("b", T0 + 11, 1), None),  # 2 in flight
    # c is capped (a's run and b's 20 are in flight): a's soft 6 is not wanted
    (T0 + 1, lease(run("c", 6, 1), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     ({m(i) for i in range(1, 8)}, {m(5)})),
    # a records 2 and 3: hard now; b's put (another shape) still ends b's fetch of 20, and
    # a's 4 stays soft (not b's to record)
    (T0 + 1, lambda s: s.put_pieces(record("a", {2, 3})), None,
     ({m(i) for i in (1, 4, 5, 6, 7)}, {m(5)})),
    (T0 + 1, lambda s: s.put_pieces(record("b", {4, 20}, pieces=24)), None,  # a conflict
     ({m(i) for i in (1, 4, 5, 6, 7)}, {m(5)})),
    (T0 + 2, lease(run("c", 3, 1), T0 + 2), held("a", T0 + 10), None),  # recorded: real expiry
    (T0 + 2, lease(run("c", 6, 1), T0 + 2), refused("a", T0 + 2),
     ({m(i) for i in (1, 4, 5, 6, 7)}, {m(5), m(6)})),
    # a's renewal reports the cut at the first wanted piece, 5; renews 0..4 only
    (T0 + 2, lease(run("a", 0, 8), T0 + 2), granted("a", T0 + 12, 5),
     ({m(i) for i in (1, 4, 5, 6, 7)}, {m(5), m(6)})),
    (T0 + 2, lease(run("a", 5, 3), T0 + 2), granted("a", T0 + 12, 1), None),  # 5 itself only
    # a had received 5 (recorded: hard, not wanted) and releases the rest of the cut
    (T0 + 3, lambda s: s.put_pieces(record("a", {5})), None,
     ({m(i) for i in (1, 4, 6, 7)}, {m(6)})),
    (T0 + 3, lease(run("a", 6, 2, ttl=0), T0 + 3), granted("a", T0 + 3, 2), ({m(1), m(4)}, set())),
    (T0 + 3, lease(run("b", 5, 1), T0 + 3), held("a", T0 + 12), None),
    (T0 + 3, lease(run("d", 4, 1), T0 + 3), refused("a", T0 + 3), ({m(1), m(4)}, {m(4)})),
    # the next asker gets a released piece normally: a hard lease with a cap entry
    (T0 + 3, lease(run("c", 6, 4), T0 + 3), granted("c", T0 + 13, 1), ({m(1), m(4)}, {m(4)})),
    (T0 + 3, lease(run("d", 6, 1), T0 + 3), held("c", T0 + 13), None),
    # 2 in flight (a's head, c's 6): d is capped and marks nothing
    (T0 + 4, lease(run("d", 1, 1), T0 + 4),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 12, capped=True),
     ({m(1), m(4)}, {m(4)})),
    # a release of the run releases its soft and wanted pieces too
    (T0 + 4, lease(run("a", 0, 8, ttl=0), T0 + 4), granted("a", T0 + 4, 8), (set(), set())),
    (T0 + 4, lease(run("c", 6, 1, ttl=0), T0 + 4), granted("c", T0 + 4, 1), (set(), set())),
    # nothing in flight, but d was refused (capped) at T0 + 4: contended until T0 + 14
    (T0 + 4, lease(run("c", 6, 6), T0 + 4), granted("c", T0 + 14, 1), (set(), set())),
    (T0 + 4, lease(run("c", 6, 1, ttl=0), T0 + 4), granted("c", T0 + 4, 1), (set(), set())),
    # solo again: c's run 6..11 is soft but for its head (d(1)'s record has 12 pieces)
    (T0 + 14, lease(run("c", 6, 6), T0 + 14), granted("c", T0 + 24, 6),
     ({m(i) for i in range(7, 12)}, set())),
    (T0 + 14, lease(run("a", 8, 1), T0 + 14), refused("c", T0 + 14),
     ({m(i) for i in range(7, 12)}, {m(8)})),
    (T0 + 14, lease(run("a", 10, 1), T0 + 14), refused("c", T0 + 14),
     ({m(i) for i in range(7, 12)}, {m(8), m(10)})),
    # c leaves: its wanted 8 is dropped when asked for, and its run's head (its cap entry)
    # no longer stops a's run, nor do a's own refusals: a takes c's 9..11 (8 is a's head)
    (T0 + 15, lambda s: s.leave(p.Leave(peer_id="c", session=S), T0 + 15), None, None),
    (T0 + 15, lease(run("a", 8, 4), T0 + 15), granted("a", T0 + 25, 4),
     ({m(7), m(9), m(10), m(11)}, set())),
    (T0 + 15, lambda s: s.stats(T0 + 15), None, ({m(7), m(9), m(10), m(11)}, set())),
    (T0 + 30, lambda s: s.stats(T0 + 30), None, (set(), set())),  # expired and swept
]  # fmt: skip


async def test_soft_pieces_alike_in_redis_and_memory(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=2), redis_url)
    try:
        for step, (now, op, expected, marks) in enumerate(SOFT_SCENARIO):
            tables = await step_alike(memory, redis_store, step, now, op, expected)
            if marks is not None:
                assert tables[2:4] == marks, f"step {step}: {tables[2:4]}"
        records = memory.registry.records
        assert (records.lease_count, records._soft, records._wanted) == (0, {}, {})
        assert records._contended == {}
        for key in ("lease_soft", "lease_wanted", "lease_contended"):
            assert await trio.to_thread.run_sync(redis_store._r.exists, redis_store._p + key) == 0
    finally:
        await redis_store.aclose()


@pytest.mark.parametrize(("cap", "max_leases", "seed"), [(3, 25, 4), (0, 40, 4), (1, 1000, 0)])
async def test_random_lease_traffic_alike_in_redis_and_memory(
    redis_url: str, cap: int, max_leases: int, seed: int
) -> None:
    """Random leases, runs, releases, hash records, leaves and expiries: same answers, and
    the same live leases, cap entries, soft and wanted leases after every step. Some runs
    are asked over the live leases of departed (left or expired) holders: taken alike."""
    rng = random.Random(seed)
    policy = Policy(max_origin_fetches=cap, max_leases=max_leases, min_announce_gap=0.0)
    memory, redis_store = await both(policy, redis_url)
    now = T0
    marked = cut = 0  # soft pieces marked wanted; renewals cut at a wanted piece
    moved = 0  # runs' cap entries moved on by a record
    taken = 0  # a dead holder's live lease taken by a run extension
    ignored = 0  # a run granted while a departed peer's contended mark of the blob is live
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
                index, bias = rng.randrange(14), rng.random()
                leases, _, soft, _, _ = live_tables(memory, now)
                mine = sorted(k for k, (holder, _) in leases.items() if holder == peer)
                theirs = sorted(k for k in soft if leases[k][0] != peer)
                gone = sorted(
                    k for k, (holder, _) in leases.items()
                    if holder != peer and memory.registry._live(holder, now) is None
                )  # fmt: skip
                if mine and bias < 0.3:  # a holder renewing (or releasing) its run
                    key, count = rng.choice(mine), rng.choice([5, 8, 64])
                    index, n = int(key.split("#")[1]), 1 if key.startswith(d(1)) else 2
                elif theirs and bias < 0.5:  # asking for another's soft piece
                    key = rng.choice(theirs)
                    index, n = int(key.split("#")[1]), 1 if key.startswith(d(1)) else 2
                elif gone and bias < 0.7:  # a run over a departed holder's leases
                    key, count, ttl = rng.choice(gone), 64, 10.0
                    index = max(int(key.split("#")[1]) - rng.choice((0, 1)), 0)
                    n = 1 if key.startswith(d(1)) else 2
                req = run(peer, index, count, ttl=ttl, n=n)
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
            marked += len(after[3] - before[3])
            if 0.75 <= roll < 0.9:  # a record: soft pieces that got a cap entry
                new = {f"{dg}#{i}" for dg, b in after[1].items() for i in b} & after[2]
                moved += len(new - {f"{dg}#{i}" for dg, b in before[1].items() for i in b})
            if roll < 0.75 and req.ttl > 0 and isinstance(out[0], p.LeaseReply):
                stop = f"{req.digest}#{req.piece_index + out[0].count}"
                cut += out[0].granted and out[0].count < req.count and stop in before[3]
                if out[0].granted:
                    run_keys = {
                        f"{req.digest}#{i}"
                        for i in range(req.piece_index + 1, req.piece_index + out[0].count)
                    }
                    for key in run_keys & before[0].keys():
                        holder = before[0][key][0]
                        if holder != peer:  # only a departed holder's lease is taken
                            assert memory.registry._live(holder, now) is None, f"step {step}"
                            taken += 1
                    head = before[0].get(f"{req.digest}#{req.piece_index}")
                    if out[0].count > 1 and (head is None or head[0] != peer):
                        # a new run: only the asker's and departed peers' refusals are marked
                        others = set(before[4].get(req.digest, {})) - {peer}
                        for other in others:
                            assert memory.registry._live(other, now) is None, f"step {step}"
                        ignored += bool(others)
            assert after[3] <= after[2], f"step {step}: wanted but not soft"
            # a soft piece never changes hands while it and its holder are live
            for key in before[2] & after[0].keys():
                holder = before[0][key][0]
                if memory.registry._live(holder, now) is not None:
                    assert holder == after[0][key][0], f"step {step}: {key} taken"
        # (with a cap of 1, a run's head in flight caps every other asker)
        assert (marked > 0 and cut > 0) or cap == 1
        assert moved > 0 or cap == 1
        assert taken > 0
        assert ignored > 0 or cap == 1
        assert await memory.stats(now + 400) == await redis_store.stats(now + 400)
        assert memory.registry.records._contended == {}
        marks = await trio.to_thread.run_sync(redis_store._r.keys, redis_store._p + "lc:*")
        assert marks == []  # no per-blob contended marks leak
    finally:
        await redis_store.aclose()


# Records whose msgpack header differs (the LEASE script reads it for the piece count): size
# as a fixint, uint16, uint32 or uint64; piece size as uint16 or uint32; a fixarray or an
# array 16 of hashes. Recorded hashes never stop a run; the record's piece count does.
@pytest.mark.parametrize(
    ("size", "piece_size", "known", "first", "expected"),
    [
        (1, 1 << 14, set(), 0, 1),  # one piece: the record ends the run
        (100, 1 << 14, {0}, 0, 1),
        (3 << 14, 1 << 14, {2}, 0, 3),  # over recorded 2
        (3 << 14, 1 << 14, {0, 1, 2}, 1, 2),  # a whole record: 1, 2
        (40 << 14, 1 << 14, {30}, 25, 15),  # 25..39
        (40 << 14, 1 << 14, set(range(40)), 31, 9),  # 31..39
        (40 << 14, 1 << 14, set(), 0, 40),
        ((1 << 32) + 1, 1 << 26, {10, 64}, 3, 62),  # 65 pieces: 3..64
        ((1 << 32) + 1, 1 << 26, {10}, 60, 5),  # 60..64
        ((1 << 32) + 1, 1 << 26, set(), 70, 1),  # past the record: the first piece only
        (200 << 14, 1 << 14, set(range(0, 200, 3)), 150, 50),  # 150..199
    ],
)
async def test_runs_stop_alike_at_the_records_piece_count(
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


async def test_a_lone_refetch_of_a_recorded_blob_gets_full_runs_alike(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=4), redis_url)
    try:
        for store in (memory, redis_store):
            await store.announce(announce("a"), T0)
            assert (await store.lease(run("a", 0, 12), T0)).count == 12
            await store.put_pieces(record("a", set(range(12))))
            await store.lease(run("a", 0, 64, ttl=0), T0)
            await store.announce(announce("b"), T0 + 400)  # a is long gone, its hashes stay
            assert await store.lease(run("b", 0, 64), T0 + 400) == granted("b", T0 + 410, 12)
    finally:
        await redis_store.aclose()


def caps(*entries: tuple[int, float]) -> dict[str, dict[int, float]]:
    """d(1)'s live cap entries."""
    return {d(1): dict(entries)} if entries else {}


# A run's cap entry moves on as its pieces are recorded, at most 2 origin fetches of one blob
# in flight: (time, operation, what both stores answer, d(1)'s live cap entries after it).
CAP_SCENARIO: list[tuple[float, Op, Any, dict[str, dict[int, float]]]] = [
    *[(T0, lambda s, peer=peer: s.announce(announce(peer), T0), None, caps())
      for peer in "abc"],
    (T0, lease(run("a", 0, 8), T0), granted("a", T0 + 10, 8), caps((0, T0 + 10))),
    (T0, lease(run("b", 10, 1), T0), granted("b", T0 + 10, 1),
     caps((0, T0 + 10), (10, T0 + 10))),
    # a records its run's head: the run counts by 1 now; c is still capped
    (T0 + 1, lambda s: s.put_pieces(record("a", {0})), None, caps((1, T0 + 10), (10, T0 + 10))),
    (T0 + 1, lease(run("c", 11, 1), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     caps((1, T0 + 10), (10, T0 + 10))),
    # a renewal refreshes the moved entry; a batch of records passes over what it records
    (T0 + 2, lease(run("a", 0, 8), T0 + 2), granted("a", T0 + 12, 8),
     caps((1, T0 + 12), (10, T0 + 10))),
    (T0 + 2, lambda s: s.put_pieces(record("a", {0, 1, 2, 3})), None,
     caps((4, T0 + 12), (10, T0 + 10))),
    # another peer's record moves nothing; b's own fetch is done (nothing of b's follows)
    (T0 + 2, lambda s: s.put_pieces(record("b", {4, 5, 10})), None, caps((4, T0 + 12))),
    # c wants a's 6: a's renewal is cut there; a records 4 and 5, the entry is at the cut
    (T0 + 3, lease(run("c", 6, 1), T0 + 3), held("a", T0 + 3), caps((4, T0 + 12))),
    (T0 + 3, lease(run("a", 4, 4), T0 + 3), granted("a", T0 + 13, 2), caps((4, T0 + 13))),
    (T0 + 3, lambda s: s.put_pieces(record("a", {4, 5})), None, caps((6, T0 + 12))),
    # a releases the cut: the entry goes; c gets 6..9 (its own refusals do not contend)
    (T0 + 3, lease(run("a", 6, 2, ttl=0), T0 + 3), granted("a", T0 + 3, 2), caps()),
    (T0 + 3, lease(run("c", 6, 4), T0 + 3), granted("c", T0 + 13, 4), caps((6, T0 + 13))),
    # a whole run recorded at once leaves no entry
    (T0 + 20, lease(run("b", 0, 64), T0 + 20), granted("b", T0 + 30, 12), caps((0, T0 + 30))),
    (T0 + 20, lambda s: s.put_pieces(record("b", set(range(12)))), None, caps()),
    (T0 + 20, lease(run("a", 0, 4), T0 + 20), held("b", T0 + 30), caps()),
]  # fmt: skip


async def test_run_cap_entries_move_alike_in_redis_and_memory(redis_url: str) -> None:
    memory, redis_store = await both(Policy(max_origin_fetches=2), redis_url)
    try:
        for step, (now, op, expected, entries) in enumerate(CAP_SCENARIO):
            tables = await step_alike(memory, redis_store, step, now, op, expected)
            assert tables[1] == entries, f"step {step}: {tables[1]}"
    finally:
        await redis_store.aclose()


# Contended blobs, at most 1 origin fetch of one blob in flight, peers live 30 s after an
# announce: (time, operation, what both stores answer, the contended marks after it
# (digest -> refused peer -> until) or None).
CONTENDED_SCENARIO: list[tuple[float, Op, Any, dict[str, dict[str, float]] | None]] = [
    *[(T0, lambda s, peer=peer: s.announce(announce(peer), T0), None, None) for peer in "abc"],
    (T0, lease(run("a", 0, 8), T0), granted("a", T0 + 10, 8), {}),
    # b asks for a's soft 3 (ttl 15): capped (a's run is the fetch in flight), and d(1) is
    # contended for others than b until T0 + 16
    (T0 + 1, lease(run("b", 3, 1, ttl=15), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     {d(1): {"b": T0 + 16}}),
    # a held refusal contends too (the later end is kept); a refused release does not
    (T0 + 1, lease(run("c", 0, 1, ttl=5), T0 + 1), held("a", T0 + 10),
     {d(1): {"b": T0 + 16, "c": T0 + 6}}),
    (T0 + 1, lease(run("c", 3, 1, ttl=0), T0 + 1), held("a", T0 + 10),
     {d(1): {"b": T0 + 16, "c": T0 + 6}}),
    (T0 + 1, lease(run("c", 2, 1, ttl=20), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     {d(1): {"b": T0 + 16, "c": T0 + 21}}),
    (T0 + 1, lease(run("c", 2, 1, ttl=3), T0 + 1),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True),
     {d(1): {"b": T0 + 16, "c": T0 + 21}}),
    # renewals and releases are unaffected (nobody was refused a soft piece: no cut)
    (T0 + 2, lease(run("a", 0, 8), T0 + 2), granted("a", T0 + 12, 8),
     {d(1): {"b": T0 + 16, "c": T0 + 21}}),
    (T0 + 2, lambda s: s.put_pieces(record("a", {0, 1, 2})), None, None),
    (T0 + 2, lease(run("a", 3, 5, ttl=0), T0 + 2), granted("a", T0 + 2, 5), None),
    # nothing in flight, but c (live) was refused lately: single pieces for b (b's own
    # refusal would not count); another blob is not contended
    (T0 + 3, lease(run("b", 3, 8), T0 + 3), granted("b", T0 + 13, 1), None),
    (T0 + 3, lambda s: s.put_pieces(record("b", {3})), None, None),
    (T0 + 4, lease(run("c", 30, 8, n=2), T0 + 4), granted("c", T0 + 14, 8),
     {d(1): {"b": T0 + 16, "c": T0 + 21}}),
    (T0 + 20.5, lease(run("a", 4, 8), T0 + 20.5), granted("a", T0 + 30.5, 1),
     {d(1): {"c": T0 + 21}}),
    (T0 + 20.5, lambda s: s.put_pieces(record("a", {4})), None, None),
    # the TTL is over: a run again (5..11: d(1)'s record has 12 pieces)
    (T0 + 21, lease(run("a", 5, 8), T0 + 21), granted("a", T0 + 31, 7), {}),
    (T0 + 21, lambda s: s.stats(T0 + 21), None, {}),
    # departed peers' marks do not count: b leaves, c's announces stop (peer_ttl 30 s)
    (T0 + 22, lambda s: s.announce(announce("a"), T0 + 22), None, None),
    (T0 + 22, lease(run("a", 0, 8, ttl=30, n=3), T0 + 22), granted("a", T0 + 52, 8), None),
    (T0 + 22, lease(run("b", 0, 1, ttl=30, n=3), T0 + 22), held("a", T0 + 52), None),
    (T0 + 22, lease(run("c", 4, 1, ttl=30, n=3), T0 + 22),
     p.LeaseReply(granted=False, holder="a", expires_at=T0 + 52, capped=True),
     {d(3): {"b": T0 + 52, "c": T0 + 52}}),
    (T0 + 22, lease(run("a", 0, 8, ttl=0, n=3), T0 + 22), granted("a", T0 + 22, 8), None),
    (T0 + 23, lambda s: s.leave(p.Leave(peer_id="b", session=S), T0 + 23), None, None),
    # b left, c is live: single pieces for a
    (T0 + 23, lease(run("a", 0, 8, n=3), T0 + 23), granted("a", T0 + 33, 1),
     {d(3): {"b": T0 + 52, "c": T0 + 52}}),
    (T0 + 23, lease(run("a", 0, 1, ttl=0, n=3), T0 + 23), granted("a", T0 + 23, 1), None),
    (T0 + 29.5, lease(run("a", 0, 8, n=3), T0 + 29.5), granted("a", T0 + 39.5, 1), None),
    (T0 + 29.5, lease(run("a", 0, 1, ttl=0, n=3), T0 + 29.5), granted("a", T0 + 29.5, 1), None),
    # c's last announce was at T0: gone at T0 + 30, its mark (kept to T0 + 52) ignored
    (T0 + 31, lease(run("a", 0, 8, n=3), T0 + 31), granted("a", T0 + 41, 8),
     {d(3): {"b": T0 + 52, "c": T0 + 52}}),
    (T0 + 45, lambda s: s.stats(T0 + 45), None, {d(3): {"b": T0 + 52, "c": T0 + 52}}),
    (T0 + 52, lambda s: s.stats(T0 + 52), None, {}),  # ended and swept
]  # fmt: skip


async def test_contended_blobs_alike_in_redis_and_memory(redis_url: str) -> None:
    policy = Policy(max_origin_fetches=1, peer_ttl=30.0, min_announce_gap=0.0)
    memory, redis_store = await both(policy, redis_url)
    try:
        for step, (now, op, expected, contended) in enumerate(CONTENDED_SCENARIO):
            tables = await step_alike(memory, redis_store, step, now, op, expected)
            if contended is not None:
                assert tables[4] == contended, f"step {step}: {tables[4]}"
        assert memory.registry.records._contended == {}
        exists = redis_store._r.exists
        assert await trio.to_thread.run_sync(exists, redis_store._p + "lease_contended") == 0
        for n in (1, 2, 3):  # no per-blob marks leak
            assert await trio.to_thread.run_sync(exists, redis_store._p + "lc:" + d(n)) == 0
    finally:
        await redis_store.aclose()


async def test_a_departed_holders_guard_leases_do_not_stop_a_run_alike(redis_url: str) -> None:
    """A node pulls a blob alone, records it and leaves (or its announces stop): its leases,
    kept as guards until they expire, no longer stop a lone asker's run. A live holder's
    still do."""
    memory, redis_store = await both(Policy(max_origin_fetches=4, peer_ttl=5.0), redis_url)
    try:
        for store in (memory, redis_store):
            for peer in "abc":
                await store.announce(announce(peer), T0)
            assert (await store.lease(run("a", 0, 12, ttl=15), T0)).count == 12
            await store.put_pieces(record("a", set(range(12))))
            # c fetched d(2)'s pieces 1..3 and recorded them; it released its head
            assert (await store.lease(run("c", 0, 4, ttl=15, n=2), T0)).count == 4
            await store.lease(run("c", 0, 1, ttl=0, n=2), T0)
            await store.put_pieces(record("c", {1, 2, 3}, n=2))
            await store.leave(p.Leave(peer_id="a", session=S), T0 + 2)
            # a left: its live leases of d(1) are taken by b's run (one grant, not 12)
            assert await store.lease(run("b", 0, 64, ttl=15), T0 + 3) == granted("b", T0 + 18, 12)
            # c is live: its leases of d(2) still stop a run
            assert await store.lease(run("b", 0, 64, n=2), T0 + 3) == granted("b", T0 + 13, 1)
            await store.lease(run("b", 0, 1, ttl=0, n=2), T0 + 3)
            # c's announces stopped (peer_ttl 5 s): its leases are free to a run now
            assert await store.lease(run("b", 0, 64, n=2), T0 + 6) == granted("b", T0 + 16, 12)
        tables = live_tables(memory, T0 + 6)
        assert tables == await trio.to_thread.run_sync(redis_tables, redis_store, T0 + 6)
        leases, entries, soft, wanted, _ = tables
        assert leases == {m(i, n): ("b", T0 + 18 if n == 1 else T0 + 16)
                          for n in (1, 2) for i in range(12)}  # fmt: skip
        assert entries == {d(1): {0: T0 + 18}, d(2): {0: T0 + 16}}
        assert soft == {m(i, n) for n in (1, 2) for i in range(1, 12)}
        assert wanted == set()
    finally:
        await redis_store.aclose()
