"""BlobPeers: per-blob link caps, seeders that take everyone, Declined, with literal ``now``."""

from __future__ import annotations

import pytest

from peer.mesh.blobpeers import MAX_DECLINED_WAIT, BlobPeers

D, E = "sha256:" + "d" * 64, "sha256:" + "e" * 64


def names(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_dial_only_while_under_the_cap() -> None:
    bp = BlobPeers(dial_cap=3, accept_cap=5)
    live = set(names(10))
    assert bp.to_dial(D, names(10), live, 0.0) == ["p0", "p1", "p2"]  # the tracker's order
    for peer in ["p0", "p1"]:
        assert bp.add(D, peer)
    assert not bp.add(D, "p0")  # already on it: no second Interested
    assert bp.to_dial(D, names(10), live, 0.0) == ["p2"]  # room for one more
    assert bp.add(D, "p2")
    assert bp.to_dial(D, names(10), live, 0.0) == []
    assert bp.to_dial(E, names(10), live, 0.0) == ["p0", "p1", "p2"]  # per blob
    assert not bp.may_dial(D, "p9", live - {"p9"}, 0.0)  # full: not even a lease holder


def test_dead_links_do_not_count_and_a_new_link_starts_over() -> None:
    bp = BlobPeers(dial_cap=2, accept_cap=4)
    bp.add(D, "a")
    bp.add(D, "b")
    assert bp.count(D, {"a", "b"}) == 2
    assert bp.count(D, {"a"}) == 1  # b's link is down
    assert bp.to_dial(D, ["a", "b", "c"], {"a"}, 0.0) == ["b"]
    bp.gone("b")
    assert list(bp.peers(D)) == ["a"]
    assert bp.add(D, "b")  # a new link to b sends Interested again


def test_take_up_to_the_inbound_cap_then_decline() -> None:
    bp = BlobPeers(dial_cap=2, accept_cap=3)
    live = set(names(6))
    assert all(bp.take(D, p, live, whole=False, can_decline=True) for p in names(3))
    assert not bp.take(D, "p3", live, whole=False, can_decline=True)
    assert not bp.is_on(D, "p3")
    assert bp.take(D, "p1", live, whole=False, can_decline=True)  # already on: stays
    assert bp.take(D, "p3", live - {"p0"}, whole=False, can_decline=True)  # p0's link died


@pytest.mark.parametrize(
    ("whole", "can_decline", "taken"),
    [
        (True, True, True),  # a seeder takes every asker
        (False, False, True),  # a wire-1 peer cannot be told: taken as version 1 did
        (False, True, False),
    ],
)
def test_past_the_cap(whole: bool, can_decline: bool, taken: bool) -> None:
    bp = BlobPeers(dial_cap=1, accept_cap=1)
    live = {"a", "b"}
    assert bp.take(D, "a", live, whole=False, can_decline=True)
    assert bp.take(D, "b", live, whole=whole, can_decline=can_decline) is taken
    assert bp.count(D, live) == (2 if taken else 1)


def test_declined_peer_is_left_alone_for_its_wait() -> None:
    bp = BlobPeers(dial_cap=5, accept_cap=5)
    live = {"a", "b"}
    bp.add(D, "a")
    bp.declined(D, "a", 3.0, now=10.0)
    assert not bp.is_on(D, "a")
    assert bp.to_dial(D, ["a", "b"], live, 12.9) == ["b"]
    assert not bp.may_dial(D, "a", set(), 12.9)
    assert bp.to_dial(E, ["a"], live, 11.0) == ["a"]  # only for that blob
    assert bp.to_dial(D, ["a", "b"], live, 13.0) == ["a", "b"]
    bp.declined(D, "b", 1e9, now=20.0)  # a peer cannot bar us for ever
    assert bp.to_dial(D, ["b"], live, 20.0 + MAX_DECLINED_WAIT) == ["b"]
    bp.declined(D, "a", 1.0, now=100.0)  # expired entries are dropped as new ones come
    assert len(bp._declined) == 1
