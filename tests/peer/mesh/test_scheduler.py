"""Piece scheduler scenarios with literal ``now`` values, plus randomised invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.mesh.pieces import Bitfield, PiecePlan
from peer.mesh.scheduler import ORIGIN, Assignment, PieceScheduler, SchedulerConfig

PIECE = 100


def make(
    pieces: int = 10, *, have: Bitfield | None = None, **config: object
) -> PieceScheduler[str]:
    cfg = SchedulerConfig(**{"origin": False, "window": 0, **config})  # type: ignore[arg-type]
    return PieceScheduler(PiecePlan(pieces * PIECE, PIECE), config=cfg, have=have)


def bits(size: int, members: range | list[int]) -> Bitfield:
    field = Bitfield(size)
    for i in members:
        field.set(i)
    return field


def by_peer(assignments: list[Assignment[str]]) -> dict[object, set[int]]:
    out: dict[object, set[int]] = {}
    for source, piece in assignments:
        out.setdefault(source, set()).add(piece)
    return out


def test_rarest_first() -> None:
    s = make(per_peer=2, endgame_pieces=0)
    s.on_bitfield("a", bits(10, range(10)))
    s.on_bitfield("b", bits(10, range(8)))
    s.on_bitfield("c", bits(10, range(6)))
    assert [s.availability(i) for i in range(10)] == [3] * 6 + [2, 2, 1, 1]
    got = by_peer(s.next_requests(0.0))
    assert got["a"] == {8, 9}  # only a has them: a spends its slots there
    assert got["b"] == {6, 7}  # the rarest of what remains that b holds
    assert len(got["c"]) == 2
    assert got["c"] <= set(range(6))


def test_rarest_first_follows_haves() -> None:
    s = make(per_peer=1, endgame_pieces=0)
    s.on_bitfield("a", bits(10, range(10)))
    for i in range(9):
        s.on_have("b", i)  # now only a has piece 9
    assert s.availability(9) == 1
    assert s.next_requests(0.0)[0] == Assignment("a", 9)


def test_streaming_window_comes_first() -> None:
    s = make(per_peer=2, window=2, endgame_pieces=0)
    s.on_bitfield("a", bits(10, range(10)))
    s.on_bitfield("b", bits(10, [9]))  # piece 9 is not rarer than anything a holds alone
    s.set_read_position(5)
    got = s.next_requests(0.0)
    assert got[:2] == [Assignment("a", 5), Assignment("a", 6)]
    s.on_piece_ok("a", 5, 0.1)
    s.set_read_position(7)
    assert s.next_requests(0.1)[0] == Assignment("a", 7)


def test_window_piece_goes_to_the_fastest_holder() -> None:
    s = make(per_peer=1, window=1, endgame_pieces=0)
    s.on_bitfield("slow", bits(10, range(10)))
    s.on_bitfield("fast", bits(10, range(10)))
    s.next_requests(0.0)  # one piece each; measure them
    s.on_piece_ok("slow", next(iter(s_inflight(s, "slow"))), 10.0)
    s.on_piece_ok("fast", next(iter(s_inflight(s, "fast"))), 1.0)
    assert s.rate("fast") == 100.0
    s.set_read_position(9)
    assert s.next_requests(10.0)[0] == Assignment("fast", 9)


def s_inflight(s: PieceScheduler[str], peer: str) -> set[int]:
    return {i for i in range(10) if peer in s.sources(i)}


def test_per_peer_cap() -> None:
    s = make(per_peer=3, endgame_pieces=0)
    s.on_bitfield("a", bits(10, range(10)))
    assert len(s.next_requests(0.0)) == 3
    assert s.next_requests(0.1) == []
    s.on_piece_ok("a", next(iter(s_inflight(s, "a"))), 0.2)
    assert len(s.next_requests(0.2)) == 1


def test_endgame_duplicates_and_cancels_losers() -> None:
    s = make(pieces=3, per_peer=4, endgame_pieces=3, max_sources=2)
    s.on_bitfield("a", bits(3, range(3)))
    s.on_bitfield("b", bits(3, range(3)))
    got = by_peer(s.next_requests(0.0))
    assert got == {"a": {0, 1, 2}, "b": {0, 1, 2}}
    assert s.sources(1) == {"a", "b"}
    assert s.on_piece_ok("b", 1, 0.5) == [Assignment("a", 1)]
    assert s.sources(1) == frozenset()
    assert s.on_piece_ok("a", 1, 0.6) == []  # the loser's copy arrived anyway: ignored
    assert s.next_requests(0.7) == []  # nobody gets a third copy (max_sources)


def test_no_endgame_while_many_pieces_missing() -> None:
    s = make(pieces=10, per_peer=10, endgame_pieces=3)
    s.on_bitfield("a", bits(10, range(10)))
    s.on_bitfield("b", bits(10, range(10)))
    got = s.next_requests(0.0)
    assert sorted(p for _, p in got) == list(range(10))  # each piece once


def test_hedge_after_slow_peer() -> None:
    # 100-byte pieces at an assumed 100 B/s: a request is late after 3 x 1 s.
    s = make(pieces=3, per_peer=1, endgame_pieces=0, initial_rate=100.0, hedge_factor=3.0)
    s.on_bitfield("a", bits(3, range(3)))
    s.on_bitfield("b", bits(3, range(3)))
    first = dict(s.next_requests(0.0))
    x, y = first["a"], first["b"]
    s.on_piece_ok("b", y, 1.0)
    (z,) = {0, 1, 2} - {x, y}
    assert s.next_requests(1.0) == [Assignment("b", z)]
    assert s.next_requests(2.99) == []
    s.on_piece_ok("b", z, 2.0)
    assert s.next_requests(2.99) == []  # a is not late yet; b has nothing left to take
    assert s.next_requests(3.0) == [Assignment("b", x)]  # hedged
    assert s.sources(x) == {"a", "b"}
    assert s.on_piece_ok("b", x, 3.5) == [Assignment("a", x)]
    assert s.done


def test_slow_peer_is_deprioritised() -> None:
    s = make(pieces=20, per_peer=2, endgame_pieces=0, slow_penalty=1.0)
    s.on_bitfield("a", bits(20, range(20)))
    s.on_bitfield("b", bits(20, range(20)))
    for source, piece in s.next_requests(0.0):
        s.on_piece_ok(source, piece, 1.0 if source == "a" else 2.0)  # a is faster
    first = s.next_requests(2.0)
    assert first[0].source == "a"
    s.on_timeout("a", first[0].piece, 3.0)  # a stalls: slow until 4.0
    for source, piece in first[1:]:
        s.on_piece_ok(source, piece, 3.0)
    later = s.next_requests(3.0)
    assert later[0].source == "b"  # b is asked first now
    assert [a.source for a in later] == ["b", "b", "a"]  # and a gets one request at most
    assert s.next_requests(3.9) == []  # a: one in flight, cap 1; b: full
    assert [a.source for a in s.next_requests(4.0)] == ["a"]  # penalty over: cap 2 again


def test_banned_peer_is_never_asked_again() -> None:
    s = make(pieces=4, per_peer=2, endgame_pieces=0)
    s.on_bitfield("evil", bits(4, range(4)))
    got = s.next_requests(0.0)
    assert {a.source for a in got} == {"evil"}
    bad, other = got[0].piece, got[1].piece
    assert s.on_piece_bad("evil", bad, 1.0) == [Assignment("evil", other)]
    assert s.is_banned("evil")
    assert s.availability(bad) == 0
    s.on_bitfield("evil", bits(4, range(4)))  # whatever it claims now
    s.on_have("evil", 3)
    assert s.next_requests(2.0) == []
    s.on_have("good", bad)
    assert s.next_requests(3.0) == [Assignment("good", bad)]


def test_origin_when_no_peer_has_the_piece() -> None:
    s = make(pieces=6, origin=True, origin_slots=2, window=1, endgame_pieces=0)
    s.set_read_position(3)
    got = s.next_requests(0.0)
    assert got[0] == Assignment(ORIGIN, 3)  # the window first
    assert [a.source for a in got] == [ORIGIN, ORIGIN]
    assert s.next_requests(0.1) == []  # origin slots full
    s.on_have("a", 5)
    assert s.next_requests(0.2) == [Assignment("a", 5)]  # a peer's piece never goes to origin


def test_origin_lease_refused_backs_off_that_piece() -> None:
    s = make(pieces=1, origin=True, endgame_pieces=0)
    assert s.next_requests(0.0) == [Assignment(ORIGIN, 0)]
    s.on_busy(ORIGIN, 0, 0.0, retry_after=5.0)  # another node holds the lease
    assert s.next_requests(4.9) == []
    s.on_have("leaseholder", 0)
    assert s.next_requests(4.9) == [Assignment("leaseholder", 0)]


def test_origin_paused_for_every_piece_when_the_cluster_cap_is_full() -> None:
    s = make(pieces=4, origin=True, origin_slots=2, window=1, endgame_pieces=0)
    first = s.next_requests(0.0)
    assert first[0] == Assignment(ORIGIN, 0)  # the window piece
    (_, refused), rest = first[1], {1, 2, 3} - {first[1].piece}
    s.on_busy(ORIGIN, refused, 0.0, retry_after=0.25)
    s.pause_origin(0.0, 0.25)  # the tracker: K origin fetches of this blob in flight
    s.pause_origin(0.0, 0.1)  # a shorter pause never shortens the one running
    assert s.next_requests(0.2) == []  # no piece at all, window or not
    s.on_piece_ok(ORIGIN, 0, 0.2)  # a fetch already granted still completes
    s.set_read_position(1)
    peer_piece = min(rest)
    s.on_bitfield("a", bits(4, [peer_piece]))
    assert s.next_requests(0.2) == [Assignment("a", peer_piece)]  # peers are not paused
    got = s.next_requests(0.25)
    assert sorted(got) == [Assignment(ORIGIN, i) for i in sorted({1, 2, 3} - {peer_piece})]


def test_origin_run_takes_one_slot_until_its_last_piece() -> None:
    s = make(pieces=8, origin=True, origin_slots=2, window=1, endgame_pieces=0)
    s.set_read_position(0)
    first, second = s.next_requests(0.0)
    assert first == Assignment(ORIGIN, 0)
    assert second.source == ORIGIN
    s.on_busy(ORIGIN, second.piece, 0.0, retry_after=0.0)  # its lease went elsewhere
    s.pause_origin(0.0, 0.15)  # ... capped
    # the tracker leased pieces 0-3 to us as one run; piece 2 is on its way from a peer
    s.on_bitfield("a", bits(8, [2]))
    assert Assignment("a", 2) in s.next_requests(0.1)
    assert s.extend_origin(0, range(4), 0.1) == [1, 3]
    assert s.sources(1) == s.sources(3) == {ORIGIN}
    assert s.origin_fetches == 1
    got = s.next_requests(0.2)
    assert [a.source for a in got] == [ORIGIN]
    assert got[0].piece in {4, 5, 6, 7}
    assert s.origin_fetches == 2
    assert s.on_piece_ok(ORIGIN, 0, 0.3) == []
    assert s.next_requests(0.3) == []  # the run still holds its slot
    assert s.on_piece_ok("a", 2, 0.3) == []
    assert s.on_piece_ok(ORIGIN, 1, 0.4) == []
    s.on_busy(ORIGIN, 3, 0.4, retry_after=1.0)  # the run broke before its last piece
    assert s.origin_fetches == 1
    assert s.is_pending(3)
    (again,) = s.next_requests(0.5)  # the run's slot is free again; piece 3 backs off
    assert again.source == ORIGIN
    assert again.piece in {4, 5, 6, 7} - {got[0].piece}
    idle = next(i for i in range(4, 8) if s.is_pending(i))
    assert s.extend_origin(idle, range(idle, 8), 0.5) == []  # not in flight from the origin


def test_origin_run_piece_from_a_peer_cancels_only_that_piece() -> None:
    s = make(pieces=4, origin=True, origin_slots=1, window=0, endgame_pieces=4)
    (head,) = s.next_requests(0.0)
    run = range(head.piece, head.piece + 1) if head.piece == 3 else range(head.piece, 4)
    taken = s.extend_origin(head.piece, run, 0.0)
    assert s.origin_fetches == 1
    if taken:
        s.on_bitfield("a", bits(4, taken))
        assert Assignment("a", taken[-1]) in s.next_requests(0.1)  # endgame: a second source
        assert s.on_piece_ok("a", taken[-1], 0.2) == [Assignment(ORIGIN, taken[-1])]
    for index in run:
        if index not in s.have:
            s.on_piece_ok(ORIGIN, index, 0.3)
    assert s.origin_fetches == 0


def test_an_origin_slot_moves_to_another_pending_piece() -> None:
    s = make(pieces=8, origin=True, origin_slots=1, window=0, endgame_pieces=0)
    (first,) = s.next_requests(0.0)
    target = next(i for i in range(7) if i not in (first.piece, first.piece - 1))
    assert s.move_origin(first.piece, target, 0.1)
    assert s.sources(target) == {ORIGIN}
    assert s.is_pending(first.piece)
    assert s.origin_fetches == 1
    assert s.next_requests(0.2) == []  # still one slot, taken
    assert not s.move_origin(first.piece, target, 0.3)  # not in flight any more
    assert s.extend_origin(target, range(target, target + 2), 0.3)  # a run now...
    assert not s.move_origin(target, first.piece, 0.3)  # ... which stays put
    s.on_piece_ok(ORIGIN, target, 0.4)
    assert s.origin_fetches == 1  # the run's second piece holds the slot
    s.on_piece_ok(ORIGIN, target + 1, 0.4)
    assert s.origin_fetches == 0


def test_paused_origin_takes_no_hedge() -> None:
    s = make(pieces=1, origin=True, per_peer=1, hedge_min=0.5, endgame_pieces=0)
    s.on_bitfield("a", bits(1, [0]))
    assert s.next_requests(0.0) == [Assignment("a", 0)]
    s.pause_origin(0.0, 2.0)
    assert s.next_requests(1.0) == []  # late at a, but the origin is paused
    assert s.next_requests(2.0) == [Assignment(ORIGIN, 0)]


@pytest.mark.parametrize(
    ("peers", "caps"),
    [(1, [4]), (2, [2, 2]), (3, [2, 2, 2]), (4, [1, 1, 1, 1]), (6, [1] * 6)],
)
def test_few_peers_share_min_inflight(peers: int, caps: list[int]) -> None:
    s = make(pieces=40, per_peer=1, min_inflight=4, endgame_pieces=0)
    for i in range(peers):
        s.on_bitfield(f"p{i}", bits(40, range(40)))
    got = by_peer(s.next_requests(0.0))
    assert sorted(len(v) for v in got.values()) == caps


def test_min_inflight_counts_only_peers_we_may_ask() -> None:
    s = make(pieces=40, per_peer=1, min_inflight=4, endgame_pieces=0)
    s.on_bitfield("a", bits(40, range(40)))
    s.on_bitfield("b", bits(40, range(40)))
    s.on_busy("b", 0, 0.0, retry_after=5.0)  # b is backing off: a is our only peer
    got = by_peer(s.next_requests(0.0))
    assert list(got) == ["a"]
    assert len(got["a"]) == 4
    s.on_bitfield("c", bits(40, range(40)))
    got = by_peer(s.next_requests(0.0))  # two peers now: 2 each, a already has 4
    assert list(got) == ["c"]
    assert len(got["c"]) == 2
    for index in got["c"]:
        s.on_timeout("c", index, 0.1)  # c is slow now: one slot, whatever the count
    assert [a.source for a in s.next_requests(0.2)] == ["c"]


def test_origin_disabled_means_waiting() -> None:
    s = make(pieces=3, origin=False)
    assert s.next_requests(0.0) == []


@pytest.mark.parametrize("origin", [True, False])
def test_window_piece_held_only_by_slow_peers_goes_to_origin(origin: bool) -> None:
    s = make(pieces=2, per_peer=1, origin=origin, window=1, endgame_pieces=0)
    s.on_bitfield("a", bits(2, range(2)))
    assert s.next_requests(0.0) == [Assignment("a", 0)]
    s.on_timeout("a", 0, 1.0)  # a stalled: slow for a while, piece 0 pending again
    expected = ORIGIN if origin else "a"  # without an origin, a slow peer beats nothing
    assert s.next_requests(1.0)[0] == Assignment(expected, 0)


def test_hedge_goes_to_origin_without_another_holder() -> None:
    s = make(pieces=1, origin=True, initial_rate=100.0, endgame_pieces=0)
    s.on_have("a", 0)
    assert s.next_requests(0.0) == [Assignment("a", 0)]
    assert s.next_requests(3.0) == [Assignment(ORIGIN, 0)]
    assert s.on_piece_ok(ORIGIN, 0, 3.2) == [Assignment("a", 0)]


def test_busy_peer_backs_off() -> None:
    s = make(pieces=2, per_peer=1, endgame_pieces=0)
    s.on_bitfield("a", bits(2, range(2)))
    (got,) = s.next_requests(0.0)
    s.on_busy("a", got.piece, 0.0, retry_after=2.0)
    assert s.next_requests(1.9) == []
    assert len(s.next_requests(2.0)) == 1


def test_peer_gone_returns_its_pieces_to_the_pool() -> None:
    s = make(pieces=2, per_peer=2, endgame_pieces=0)
    s.on_bitfield("a", bits(2, range(2)))
    assert len(s.next_requests(0.0)) == 2
    s.on_peer_gone("a")
    assert s.availability(0) == 0
    assert s.sources(0) == frozenset()
    s.on_bitfield("b", bits(2, range(2)))
    assert by_peer(s.next_requests(1.0)) == {"b": {0, 1}}


def test_bitfield_replaces_what_we_knew() -> None:
    s = make(pieces=4)
    s.on_bitfield("a", bits(4, [0, 1]))
    s.on_bitfield("a", bits(4, [2]))
    assert [s.availability(i) for i in range(4)] == [0, 0, 1, 0]
    with pytest.raises(ValueError):
        s.on_bitfield("a", bits(5, []))
    with pytest.raises(IndexError):
        s.on_have("a", 4)


def test_resume_from_local_pieces_and_finish() -> None:
    s = make(pieces=3, have=bits(3, [0, 2]))
    assert s.missing == 1
    s.on_bitfield("a", bits(3, range(3)))
    assert s.next_requests(0.0) == [Assignment("a", 1)]
    s.on_piece_ok("a", 1, 0.1)
    assert s.done
    assert s.have == bits(3, range(3))
    assert s.next_requests(0.2) == []


def test_nodes_spread_over_equally_rare_pieces() -> None:
    firsts = set()
    for seed in range(8):
        s = make(pieces=50, per_peer=1, seed=seed)
        s.on_bitfield("a", bits(50, range(50)))
        firsts.add(s.next_requests(0.0)[0].piece)
    assert len(firsts) > 4


# ---- randomised invariants ---------------------------------------------------------------


def check(
    s: PieceScheduler[str], cfg: SchedulerConfig, banned: set[str], holders: dict[str, set[int]]
) -> None:
    have = s.have
    for i in range(have.size):
        expected = sum(1 for p, pieces in holders.items() if i in pieces and p not in banned)
        assert s.availability(i) == expected
        sources = s.sources(i)
        assert len(sources) <= max(cfg.max_sources, 1)
        if i in have:
            assert not sources
    for peer in holders:
        mine = [i for i in range(have.size) if peer in s.sources(i)]
        assert len(mine) <= cfg.per_peer
        assert peer not in banned or not mine
    at_origin = sum(1 for i in range(have.size) if ORIGIN in s.sources(i))
    assert 0 <= s.origin_fetches <= min(at_origin, cfg.origin_slots)
    assert (s.origin_fetches == 0) == (at_origin == 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_random_runs_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    cfg = SchedulerConfig(
        per_peer=rng.randint(1, 4),
        window=rng.randint(0, 4),
        endgame_pieces=rng.randint(0, 5),
        max_sources=rng.randint(1, 3),
        origin=rng.random() < 0.5,
        initial_rate=1000.0,
        seed=seed,
    )
    s: PieceScheduler[str] = PieceScheduler(PiecePlan(n * PIECE, PIECE), config=cfg)
    peers = [f"p{k}" for k in range(rng.randint(1, 6))]
    holders: dict[str, set[int]] = {p: set() for p in peers}
    banned: set[str] = set()
    now = 0.0
    for _ in range(150):
        now += rng.random()
        op = rng.random()
        peer = rng.choice(peers)
        if op < 0.3:
            i = rng.randrange(n)
            holders[peer].add(i)
            s.on_have(peer, i)
        elif op < 0.75:
            for source, piece in s.next_requests(now):
                assert piece not in s.have
                if source != ORIGIN:
                    assert source not in banned
                    assert piece in holders[source]
                elif rng.random() < 0.3:  # the tracker leased a run
                    for j in s.extend_origin(piece, range(piece, piece + rng.randint(1, 5)), now):
                        assert ORIGIN in s.sources(j)
        else:
            busy = [(src, i) for i in range(n) for src in s.sources(i)]
            if busy:
                src, i = rng.choice(busy)
                outcome = rng.random()
                if outcome < 0.6:
                    for loser in s.on_piece_ok(src, i, now):
                        assert loser.piece == i
                elif outcome < 0.7 and src != ORIGIN:
                    s.on_piece_bad(src, i, now)
                    banned.add(src)
                elif outcome < 0.8:
                    s.on_timeout(src, i, now)
                elif outcome < 0.9:
                    s.on_busy(src, i, now, 1.0)
                elif src != ORIGIN:
                    s.on_peer_gone(src)
                    holders[src] = set()
        check(s, cfg, banned, holders)


def test_full_download_from_a_swarm_of_seeders() -> None:
    """2,000 pieces, 40 seeders of varying speed: every piece arrives exactly once."""
    n = 2000
    s: PieceScheduler[int] = PieceScheduler(PiecePlan(n * PIECE, PIECE))
    for peer in range(40):
        s.on_bitfield(peer, Bitfield.full(n))
    now, done, pending = 0.0, 0, list[Assignment[int]]()
    while not s.done:
        pending.extend(s.next_requests(now))
        now += 0.01
        source, piece = pending.pop(0)
        s.on_piece_ok(source, piece, now)
        done += 1
    assert done >= n
    assert s.have.complete
