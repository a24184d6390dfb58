"""Layer 1: the pure registry and records with literal ``now`` values."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from tracker import protocol as p
from tracker.errors import PeerBanned, PeerConflict, RegistryFull, TooManyRequests
from tracker.model import Policy, rank, tier_of
from tracker.records import Records
from tracker.registry import LOOKUP_SAMPLE, Registry

S = b"s" * 16
T0 = 1_000.0
POLICY = Policy(announce_interval=30.0, peer_ttl=90.0, min_announce_gap=1.0)


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def announce(
    peer: str,
    held: tuple[int, ...] = (),
    partial: tuple[tuple[int, int], ...] = (),
    *,
    load: int = 0,
    slots: int = 4,
    session: bytes = S,
) -> p.Announce:
    return p.Announce(
        peer_id=peer,
        session=session,
        host=f"10.0.0.{len(peer)}",
        port=5051,
        held=tuple(p.BlobHeld(d(n), 100) for n in held),
        in_progress=tuple(p.BlobInProgress(d(n), 100, got) for n, got in partial),
        upload_slots=slots,
        load=load,
    )


def lookup(
    reg: Registry, n: int, asker: str = "asker", limit: int = 16, now: float = T0
) -> list[str]:
    reply = reg.lookup(p.Lookup(digest=d(n), peer_id=asker, limit=limit), now)
    return [a.peer_id for a in reply.peers]


def check_invariants(reg: Registry) -> None:
    """Rule 1 and 2 of the registry docstring, checked from both sides."""
    holdings = 0
    for peer in reg._peers.values():
        holdings += len(peer.held) + len(peer.partial)
        for digest in peer.held:
            assert peer.peer_id in reg._blobs[digest].complete
        for digest in peer.partial:
            assert peer.peer_id in reg._blobs[digest].partial
    for digest, blob in reg._blobs.items():
        assert blob.complete or blob.partial, f"empty blob {digest} kept"
        for peer_id in blob.complete:
            assert digest in reg._peers[peer_id].held
        for peer_id in blob.partial:
            assert digest in reg._peers[peer_id].partial
    assert holdings == reg._holdings
    seen = [peer.last_seen for peer in reg._peers.values()]
    assert seen == sorted(seen), "peers must stay ordered by last announce"


@pytest.fixture
def reg() -> Registry:
    return Registry(POLICY, rng=random.Random(7))


def test_announce_then_lookup(reg: Registry) -> None:
    reply = reg.announce(announce("a", (1, 2)), T0)
    assert reply == p.AnnounceReply(interval=30.0, peer_ttl=90.0, draining=False)
    found = reg.lookup(p.Lookup(digest=d(1), peer_id="b", limit=4), T0)
    assert found.size == 100
    assert found.peers == (
        p.PeerAddr(
            peer_id="a", host="10.0.0.1", port=5051, complete=True, bytes_held=100, upload_slots=4
        ),
    )
    check_invariants(reg)


def test_unknown_digest_has_no_peers(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    assert reg.lookup(p.Lookup(digest=d(9), peer_id="b"), T0) == p.LookupReply(digest=d(9), size=0)


def test_never_returns_the_asker(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    reg.announce(announce("b", (1,)), T0)
    assert lookup(reg, 1, asker="a") == ["b"]
    assert lookup(reg, 1, asker="b") == ["a"]


@pytest.mark.parametrize(
    ("age", "alive"),
    [(0.0, True), (89.999, True), (90.0, False), (500.0, False)],
)
def test_expiry_at_exactly_ttl(reg: Registry, age: float, alive: bool) -> None:
    reg.announce(announce("a", (1,)), T0)
    assert lookup(reg, 1, now=T0 + age) == (["a"] if alive else [])


def test_sweep_removes_only_expired_peers_in_order(reg: Registry) -> None:
    for i, peer in enumerate(["a", "b", "c"]):
        reg.announce(announce(peer, (1, i + 10)), T0 + 10 * i)
    reg.announce(announce("a", (1, 10)), T0 + 25)  # a re-announces: now the newest
    assert reg.sweep(T0 + 100) == 1  # b (seen T0+10): deadline T0+10 is inclusive
    assert [v.peer_id for v in reg.peers(T0 + 100)] == ["a", "c"]
    assert reg.sweep(T0 + 115) == 2
    assert reg.stats(T0 + 115).peers == 0
    assert reg._blobs == {}
    check_invariants(reg)


def test_reannounce_replaces_state(reg: Registry) -> None:
    reg.announce(announce("a", (1, 2), ((3, 10),)), T0)
    reg.announce(announce("a", (2, 3)), T0 + 5)
    assert lookup(reg, 1) == []
    assert lookup(reg, 2) == ["a"]
    reply = reg.lookup(p.Lookup(digest=d(3), peer_id="x"), T0 + 5)
    assert reply.peers[0].complete
    assert set(reg._blobs) == {d(2), d(3)}
    check_invariants(reg)


def test_held_wins_over_in_progress_and_duplicates_collapse(reg: Registry) -> None:
    reg.announce(announce("a", (1, 1), ((1, 5), (2, 5), (2, 7))), T0)
    assert reg.stats(T0).holdings == 2
    assert reg.blob(d(2), T0) is not None
    assert reg.blob(d(2), T0).holders[0].bytes_held == 7  # type: ignore[union-attr]
    check_invariants(reg)


def test_ranking_tiers_complete_idle_first() -> None:
    reg = Registry(POLICY, rng=random.Random(1))
    reg.announce(announce("saturated", (1,), load=4, slots=4), T0)
    reg.announce(announce("partial", (), ((1, 50),)), T0)
    reg.announce(announce("busy", (1,), load=2), T0)
    reg.announce(announce("idle", (1,), load=0), T0)
    assert lookup(reg, 1) == ["idle", "busy", "partial", "saturated"]


@pytest.mark.parametrize(
    ("complete", "load", "slots", "tier"),
    [
        (True, 0, 4, 0),
        (True, 0, 0, 0),
        (True, 3, 4, 1),
        (True, 9, 0, 1),  # unknown capacity is never saturated
        (False, 0, 4, 2),
        (False, 4, 4, 3),
        (True, 4, 4, 3),
    ],
)
def test_tier_of(complete: bool, load: int, slots: int, tier: int) -> None:
    assert tier_of(complete=complete, load=load, upload_slots=slots) == tier


def test_rank_samples_within_the_first_tier_that_overflows() -> None:
    candidates = [(0, f"idle{i}") for i in range(3)] + [(1, f"busy{i}") for i in range(10)]
    for seed in range(20):
        chosen = rank(candidates, limit=5, rng=random.Random(seed))
        assert len(chosen) == len(set(chosen)) == 5
        assert set(chosen[:3]) == {"idle0", "idle1", "idle2"}
        assert all(c.startswith("busy") for c in chosen[3:])


def test_sampling_is_bounded_and_spreads_load(reg: Registry) -> None:
    for i in range(50):
        reg.announce(announce(f"p{i}", (1,)), T0)
    hits: Counter[str] = Counter()
    for _ in range(400):
        chosen = lookup(reg, 1, limit=5)
        assert len(chosen) == len(set(chosen)) == 5
        hits.update(chosen)
    assert len(hits) == 50, "every holder is handed out sometimes"
    assert max(hits.values()) < 3 * 400 * 5 / 50, "no holder is handed out far more than its share"


def test_limit_larger_than_holders(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    assert lookup(reg, 1, limit=p.MAX_LOOKUP_LIMIT) == ["a"]


def test_session_conflict_protects_a_live_id(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    with pytest.raises(PeerConflict):
        reg.announce(announce("a", (2,), session=b"x" * 16), T0 + 5)
    with pytest.raises(PeerConflict):
        reg.leave(p.Leave(peer_id="a", session=b"x" * 16), T0 + 5)
    assert lookup(reg, 1) == ["a"]
    # Once the id expired, a new session may take it.
    reg.announce(announce("a", (2,), session=b"x" * 16), T0 + 90)
    assert lookup(reg, 2, now=T0 + 90) == ["a"]
    assert lookup(reg, 1, now=T0 + 90) == []
    check_invariants(reg)


def test_announce_flood_is_refused_with_retry_after(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    with pytest.raises(TooManyRequests) as info:
        reg.announce(announce("a", (2,)), T0 + 0.25)
    assert info.value.retry_after == pytest.approx(0.75)
    reg.announce(announce("a", (2,)), T0 + 1.0)
    assert lookup(reg, 2, now=T0 + 1) == ["a"]


def test_leave_forgets_and_is_idempotent(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    reg.leave(p.Leave(peer_id="a", session=S), T0 + 1)
    reg.leave(p.Leave(peer_id="a", session=S), T0 + 2)
    reg.leave(p.Leave(peer_id="never-seen", session=S), T0 + 2)
    assert lookup(reg, 1) == []
    assert reg.stats(T0).peers == 0
    check_invariants(reg)


def test_max_peers_refuses_new_peers_but_not_known_ones() -> None:
    reg = Registry(Policy(max_peers=2), rng=random.Random(0))
    reg.announce(announce("a", (1,)), T0)
    reg.announce(announce("b", (1,)), T0)
    with pytest.raises(RegistryFull):
        reg.announce(announce("c", (1,)), T0 + 1)
    reg.announce(announce("a", (1, 2)), T0 + 2)  # known peers still re-announce
    reg.announce(announce("c", (1,)), T0 + 100)  # a and b expired: room again
    assert [v.peer_id for v in reg.peers(T0 + 100)] == ["c"]
    check_invariants(reg)


def test_max_holdings_refuses_without_changing_anything() -> None:
    reg = Registry(Policy(max_holdings=3), rng=random.Random(0))
    reg.announce(announce("a", (1, 2)), T0)
    with pytest.raises(RegistryFull):
        reg.announce(announce("b", (1, 2)), T0)
    reg.announce(announce("a", (1, 2, 3)), T0 + 1)  # a replaces its own 2 with 3
    assert reg.stats(T0 + 1).holdings == 3
    assert lookup(reg, 1, now=T0 + 1) == ["a"]
    check_invariants(reg)


def test_drain_hides_a_peer_and_tells_it(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    reg.announce(announce("b", (1,)), T0)
    assert reg.drain("a", T0 + 1)
    assert not reg.drain("nobody", T0 + 1)
    assert lookup(reg, 1) == ["b"]
    assert reg.announce(announce("a", (1,)), T0 + 5).draining
    assert [v.draining for v in reg.peers(T0 + 5)] == [True, False]


def test_ban_forgets_and_refuses_until_it_ends(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    reg.ban("a", T0 + 1)
    assert lookup(reg, 1, now=T0 + 1) == []
    with pytest.raises(PeerBanned):
        reg.announce(announce("a", (1,)), T0 + 2)
    end = T0 + 1 + POLICY.ban_seconds
    with pytest.raises(PeerBanned):
        reg.announce(announce("a", (1,)), end - 0.001)
    reg.announce(announce("a", (1,)), end)
    assert lookup(reg, 1, now=end) == ["a"]
    check_invariants(reg)


def test_forget_drops_holders_and_records(reg: Registry) -> None:
    reg.announce(announce("a", (1, 2), ((3, 1),)), T0)
    reg.announce(announce("b", (), ((1, 1),)), T0)
    tag = p.TagRecord(
        registry="r",
        repository="x",
        tag="t",
        accept="",
        digest=d(1),
        media_type="a/b",
        size=1,
        resolved_at=1.0,
    )
    reg.records.put_tag(tag)
    assert reg.forget(d(1))
    assert reg.blob(d(1), T0) is None
    assert reg.records.get_tag(p.TagQuery(registry="r", repository="x", tag="t", accept="")) is None
    assert lookup(reg, 2) == ["a"]
    assert not reg.forget(d(1))
    check_invariants(reg)


def test_admin_views_and_paging(reg: Registry) -> None:
    for i in range(5):
        reg.announce(announce(f"p{i}", tuple(range(i + 1)), ((9, 10 * i),)), T0 + i)
    assert [v.peer_id for v in reg.peers(T0 + 5, offset=1, limit=2)] == ["p1", "p2"]
    blobs = reg.blobs(T0 + 5, offset=0, limit=2)
    assert [(b.digest, b.holders, b.in_progress) for b in blobs] == [(d(0), 5, 0), (d(1), 4, 0)]
    detail = reg.blob(d(9), T0 + 5)
    assert detail is not None
    assert [(h.peer_id, h.complete, h.bytes_held) for h in detail.holders][:2] == [
        ("p0", False, 0),
        ("p1", False, 10),
    ]
    transfers = reg.transfers(T0 + 5, limit=2)
    assert [t.peer_id for t in transfers] == ["p4", "p3"]
    stats = reg.stats(T0 + 5)
    assert (stats.peers, stats.blobs, stats.holdings, stats.in_progress) == (5, 6, 20, 5)


# --- records ---------------------------------------------------------------------------


def hashes(
    digest: str, pieces: int, fill: int = 1, peer: str = "n", known: range | None = None
) -> p.PieceHashes:
    """A record of ``pieces`` pieces; only the indexes in ``known`` (default: all) filled."""
    known = range(pieces) if known is None else known
    return p.PieceHashes(
        digest=digest,
        size=pieces * p.MIN_PIECE_SIZE,
        piece_size=p.MIN_PIECE_SIZE,
        hashes=tuple(bytes([fill]) * 32 if i in known else b"" for i in range(pieces)),
        peer_id=peer,
    )


def test_piece_hashes_same_record_again_is_neither_stored_nor_a_conflict() -> None:
    records = Records(Policy())
    assert records.put_pieces(hashes(d(1), 2)) == p.PiecesPutReply(stored=True)
    assert records.put_pieces(hashes(d(1), 2, peer="other")) == p.PiecesPutReply(stored=False)
    assert records.put_pieces(hashes(d(1), 2, fill=9)) == p.PiecesPutReply(
        stored=False, conflict=True
    )
    assert records.get_pieces(d(1)) == hashes(d(1), 2)
    assert records.conflicts == {d(1): 1}


def test_piece_hashes_merge_per_piece_first_writer_wins() -> None:
    records = Records(Policy())
    put = records.put_pieces
    assert put(hashes(d(1), 4, fill=1, peer="a", known=range(1))) == p.PiecesPutReply(stored=True)
    assert records.get_pieces(d(1)) == hashes(d(1), 4, fill=1, peer="a", known=range(1))
    # Another peer fills other pieces; the record keeps its first writer.
    assert put(hashes(d(1), 4, fill=1, peer="b", known=range(2, 4))).stored
    assert put(hashes(d(1), 4, fill=1, peer="b", known=range(2, 4))) == p.PiecesPutReply(
        stored=False
    )
    record = records.get_pieces(d(1))
    assert record is not None
    assert (record.hashes, record.peer_id) == ((b"\x01" * 32, b"", b"\x01" * 32, b"\x01" * 32), "a")
    # A different hash for a known piece conflicts and changes nothing, even when the same
    # put also fills an unknown piece (that piece is stored).
    assert put(hashes(d(1), 4, fill=7, peer="c", known=range(2, 3))) == p.PiecesPutReply(
        stored=False, conflict=True
    )
    assert put(hashes(d(1), 4, fill=7, peer="c", known=range(3))) == p.PiecesPutReply(
        stored=True, conflict=True
    )
    record = records.get_pieces(d(1))
    assert record is not None
    assert record.hashes == (b"\x01" * 32, b"\x07" * 32, b"\x01" * 32, b"\x01" * 32)
    assert records.conflicts == {d(1): 2}  # once per conflicting put, not per piece
    # A full record agreeing with every known piece is not a conflict, and fills nothing.
    assert put(dataclasses.replace(record, peer_id="d")) == p.PiecesPutReply(stored=False)


def test_piece_hashes_of_another_shape_conflict_as_a_whole() -> None:
    records = Records(Policy())
    assert records.put_pieces(hashes(d(1), 2, known=range(1))).stored
    for other in (
        hashes(d(1), 3),  # another size
        dataclasses.replace(hashes(d(1), 2), size=2 * p.MIN_PIECE_SIZE - 1),
        dataclasses.replace(hashes(d(1), 1), piece_size=2 * p.MIN_PIECE_SIZE),
    ):
        assert records.put_pieces(other) == p.PiecesPutReply(stored=False, conflict=True)
    assert records.get_pieces(d(1)) == hashes(d(1), 2, known=range(1))
    assert records.conflicts == {d(1): 3}


def test_piece_hashes_evict_oldest_past_the_byte_budget() -> None:
    cost = 256 + 32 * 10
    records = Records(Policy(max_piece_bytes=2 * cost))
    for n in range(3):
        records.put_pieces(hashes(d(n), 10))
    assert records.get_pieces(d(0)) is None
    assert records.get_pieces(d(1)) is not None
    assert records.get_pieces(d(2)) is not None


def test_piece_hashes_cost_the_same_partial_and_filling_one_refreshes_it() -> None:
    cost = 256 + 32 * 10
    records = Records(Policy(max_piece_bytes=2 * cost))
    records.put_pieces(hashes(d(0), 10, known=range(0)))  # no piece known yet: full cost
    records.put_pieces(hashes(d(1), 10, known=range(5)))
    assert records.put_pieces(hashes(d(0), 10, known=range(3))).stored  # d(0) is now newest
    assert records.piece_count == 2  # filling costs nothing more: nobody was evicted
    records.put_pieces(hashes(d(2), 10))  # evicts d(1), the least recently updated
    assert [records.get_pieces(d(n)) is not None for n in range(3)] == [True, False, True]
    records.put_pieces(hashes(d(3), 10))
    assert records.piece_count == 2


def test_tags_newest_resolution_wins_and_oldest_is_evicted() -> None:
    records = Records(Policy(max_tags=2))

    def tag(name: str, at: float, n: int = 1) -> p.TagRecord:
        return p.TagRecord(
            registry="r",
            repository="x",
            tag=name,
            accept="",
            digest=d(n),
            media_type="a/b",
            size=1,
            resolved_at=at,
        )

    def get(name: str) -> p.TagRecord | None:
        return records.get_tag(p.TagQuery(registry="r", repository="x", tag=name, accept=""))

    assert records.put_tag(tag("a", 10.0))
    assert records.put_tag(tag("b", 10.0))
    assert not records.put_tag(tag("a", 10.0, n=2))  # same time: keep ours, order unchanged
    assert records.put_tag(tag("c", 1.0))  # evicts "a", the least recently updated
    assert get("a") is None
    assert records.put_tag(tag("b", 11.0, n=2))  # "b" becomes the most recently updated
    assert records.put_tag(tag("d", 1.0))  # evicts "c"
    assert [get(n) is not None for n in "bcd"] == [True, False, True]
    assert get("b") == tag("b", 11.0, n=2)
    assert records.tag_count == 2


def lease(peer: str, ttl: float, index: int = 0, digest: str = d(1)) -> p.LeaseRequest:
    return p.LeaseRequest(digest=digest, piece_index=index, peer_id=peer, session=S, ttl=ttl)


def test_lease_grant_hold_renew_release_expire() -> None:
    records = Records(Policy())
    assert records.lease(lease("a", 10), T0) == p.LeaseReply(
        granted=True, holder="a", expires_at=T0 + 10
    )
    assert records.lease(lease("b", 10), T0 + 1) == p.LeaseReply(
        granted=False, holder="a", expires_at=T0 + 10
    )
    assert records.lease(lease("b", 10, index=1), T0 + 1).granted  # another range
    assert records.lease(lease("a", 10), T0 + 5).expires_at == T0 + 15  # renewal
    assert not records.lease(lease("b", 0), T0 + 6).granted  # b cannot release a's lease
    assert records.lease(lease("a", 0), T0 + 6).granted  # release
    assert records.lease(lease("b", 10), T0 + 6).holder == "b"
    assert records.lease(lease("a", 10), T0 + 16).holder == "a"  # b's expired at T0+16


def test_lease_cap_sweeps_expired_then_refuses() -> None:
    records = Records(Policy(max_leases=2))
    records.lease(lease("a", 10, index=0), T0)
    records.lease(lease("a", 20, index=1), T0)
    with pytest.raises(RegistryFull):
        records.lease(lease("a", 10, index=2), T0 + 5)
    assert records.lease(lease("a", 10, index=2), T0 + 10).granted  # index 0 expired
    assert records.lease_count == 2


def test_origin_fetches_of_a_blob_are_capped_cluster_wide() -> None:
    records = Records(Policy(max_origin_fetches=3))
    for i, peer in enumerate("abc"):
        assert records.lease(lease(peer, 10 + i, index=i), T0).granted
    assert records.lease(lease("d", 10, index=3), T0 + 1) == p.LeaseReply(
        granted=False, holder="a", expires_at=T0 + 10, capped=True
    )
    assert records.lease(lease("d", 10, index=0, digest=d(2)), T0 + 1).granted  # per blob
    assert records.lease(lease("b", 10, index=1), T0 + 2).expires_at == T0 + 12  # renewal
    assert records.lease(lease("c", 0, index=2), T0 + 3).granted  # released: room for one
    assert records.lease(lease("d", 10, index=3), T0 + 3).granted
    assert records.lease(lease("e", 10, index=4), T0 + 4).capped
    assert records.lease(lease("e", 10, index=4), T0 + 10).granted  # a's ran out
    records.sweep(T0 + 100)
    assert records.lease_count == 0
    assert records._blob_leases == {}


def test_a_recorded_hash_ends_the_fetch_but_not_the_guard() -> None:
    records = Records(Policy(max_origin_fetches=2))
    assert records.lease(lease("a", 10, index=0), T0).granted
    assert records.lease(lease("b", 10, index=1), T0).granted
    assert records.lease(lease("c", 10, index=2), T0).capped

    def hashes(peer: str, known: set[int]) -> p.PieceHashes:
        filled = tuple(b"\x01" * 32 if i in known else b"" for i in range(4))
        return p.PieceHashes(digest=d(1), size=4 << 14, piece_size=1 << 14, hashes=filled,
                             peer_id=peer)  # fmt: skip

    records.put_pieces(hashes("c", {0, 1}))  # not c's leases: nothing changes
    assert records.lease(lease("c", 10, index=2), T0 + 1).capped
    records.put_pieces(hashes("a", {0}))  # a's fetch of piece 0 is done
    assert records.lease(lease("c", 10, index=2), T0 + 1).granted  # a slot is free
    held = records.lease(lease("c", 10, index=0), T0 + 1)  # but piece 0 is still a's
    assert (held.granted, held.holder, held.capped) == (False, "a", False)


def test_origin_fetch_cap_zero_means_no_cap() -> None:
    records = Records(Policy(max_origin_fetches=0))
    assert all(records.lease(lease("a", 10, index=i), T0).granted for i in range(100))


def test_registry_lease_checks_the_session(reg: Registry) -> None:
    reg.announce(announce("a", (1,)), T0)
    with pytest.raises(PeerConflict):
        reg.lease(
            p.LeaseRequest(digest=d(1), piece_index=0, peer_id="a", session=b"x" * 16, ttl=5), T0
        )
    assert reg.lease(lease("a", 5), T0).granted


def test_lookup_examines_a_bounded_random_sample(reg: Registry) -> None:
    for i in range(1000):
        reg.announce(announce(f"p{i}", (1,), load=1), T0)  # all tier 1: no early stop
    draws = 0
    uniform = reg._rng.random

    def counting() -> float:
        nonlocal draws
        draws += 1
        return uniform()

    reg._rng.random = counting  # type: ignore[method-assign]  # count the examined holders
    assert len(set(lookup(reg, 1, limit=16))) == 16
    assert draws == LOOKUP_SAMPLE
    # With idle holders the scan stops as soon as `limit` of them are found.
    reg.announce(announce("p0", (1,), load=0), T0 + 5)
    draws = 0
    for i in range(1, 1000):
        reg._peers[f"p{i}"].load = 0
    assert len(lookup(reg, 1, limit=16, now=T0 + 5)) == 16
    assert draws == 16
