"""Piece plans, piece hashes and bitfields."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import IntegrityError
from peer.mesh.pieces import (
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    Bitfield,
    PieceHasher,
    PiecePlan,
    RarityIndex,
    hash_piece,
    piece_size_for,
    piece_size_v1,
    verify_piece,
)

MiB = 1 << 20


@pytest.mark.parametrize(
    ("size", "piece", "v1"),
    [
        (0, MiB, MiB),
        (1, MiB, MiB),
        (30 * MiB, MiB, MiB),
        (500 * MiB, MiB, MiB),
        (500 * MiB + 1, MiB, 2 * MiB),
        (1000 * MiB - 1, MiB, 2 * MiB),
        (1000 * MiB, 2 * MiB, 2 * MiB),
        (1 << 30, 2 * MiB, 4 * MiB),
        (2000 * MiB, 4 * MiB, 4 * MiB),
        (2000 * MiB + 1, 4 * MiB, 8 * MiB),
        (4000 * MiB, 8 * MiB, 8 * MiB),
        (8 << 30, 16 * MiB, 16 * MiB),
        (200 << 30, 16 * MiB, 16 * MiB),
    ],
)
def test_piece_size_table(size: int, piece: int, v1: int) -> None:
    assert piece_size_for(size) == piece
    assert piece_size_v1(size) == v1


@given(st.integers(0, 256 << 30))
def test_piece_size_properties(size: int) -> None:
    piece = piece_size_for(size)
    assert MIN_PIECE_SIZE <= piece <= MAX_PIECE_SIZE
    assert piece & (piece - 1) == 0
    count = PiecePlan(size, piece).count
    assert count <= 16_384  # the tracker's hash cap
    if piece > MIN_PIECE_SIZE:
        assert count >= 500  # rounded down: never fewer pieces than the target
    if piece < MAX_PIECE_SIZE:
        assert count < 1000  # ... and under twice as many
    assert piece_size_v1(size) in (piece, 2 * piece)


def test_negative_size_refused() -> None:
    with pytest.raises(ValueError):
        piece_size_for(-1)


@given(st.integers(0, 10_000), st.integers(1, 3000))
def test_plan_spans_tile_the_blob(size: int, piece_size: int) -> None:
    plan = PiecePlan(size, piece_size)
    spans = [plan.span(i) for i in range(plan.count)]
    assert [s for s, _ in spans] == [i * piece_size for i in range(plan.count)]
    assert all(e > s for s, e in spans)
    assert sum(plan.length(i) for i in range(plan.count)) == size
    if spans:
        assert spans[-1][1] == size
        assert plan.index_at(size - 1) == plan.count - 1


def test_plan_details() -> None:
    plan = PiecePlan(10, 4)
    assert plan.count == 3
    assert [plan.span(i) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert plan.length(2) == 2
    assert plan.index_at(4) == 1
    assert plan.pieces_for(3, 5) == range(2)
    assert plan.pieces_for(4, 8) == range(1, 2)
    assert plan.pieces_for(9, 100) == range(2, 3)
    assert plan.pieces_for(5, 5) == range(0)
    assert PiecePlan(0, 4).count == 0
    assert PiecePlan.for_size(3 * MiB) == PiecePlan(3 * MiB, MiB)
    for bad in (lambda: plan.span(3), lambda: plan.span(-1), lambda: plan.index_at(10)):
        with pytest.raises(IndexError):
            bad()
    with pytest.raises(ValueError):
        PiecePlan(10, 0)


def test_verify_piece() -> None:
    plan = PiecePlan(10, 4)
    verify_piece(plan, 2, b"xy", hashlib.sha256(b"xy").digest())
    with pytest.raises(IntegrityError, match="SHA-256"):
        verify_piece(plan, 2, b"xz", hash_piece(b"xy"))
    with pytest.raises(IntegrityError, match="3 bytes, expected 2"):
        verify_piece(plan, 2, b"xyz", hash_piece(b"xyz"))


@given(st.binary(max_size=200), st.integers(1, 50), st.lists(st.integers(1, 60), max_size=20))
def test_piece_hasher_matches_piece_by_piece(blob: bytes, piece_size: int, cuts: list[int]) -> None:
    plan = PiecePlan(len(blob), piece_size)
    hasher = PieceHasher(plan)
    pos = 0
    for cut in [*cuts, len(blob)]:
        hasher.update(blob[pos : pos + cut])
        pos += cut
    expected = tuple(hash_piece(blob[s:e]) for s, e in map(plan.span, range(plan.count)))
    assert hasher.hashes() == expected


def test_piece_hasher_length_checks() -> None:
    hasher = PieceHasher(PiecePlan(5, 2))
    hasher.update(b"abc")
    with pytest.raises(IntegrityError, match="ended at 3"):
        hasher.hashes()
    with pytest.raises(IntegrityError, match="longer than 5"):
        hasher.update(b"def")


def test_bitfield_basics() -> None:
    bits = Bitfield(10)
    assert (bits.count, bits.complete, list(bits)) == (0, False, [])
    assert bits.set(0) is True
    assert bits.set(0) is False
    assert bits.set(9) is True
    assert 9 in bits
    assert bits.test(1) is False
    assert bits.count == 2
    assert list(bits) == [0, 9]
    assert list(bits.missing()) == list(range(1, 9))
    assert bits.to_bytes() == b"\x80\x40"
    assert bits.clear(0) is True
    assert bits.clear(0) is False
    assert bits.count == 1
    for bad in (-1, 10):
        with pytest.raises(IndexError):
            bits.test(bad)
    full = Bitfield.full(10)
    assert full.complete
    assert full.to_bytes() == b"\xff\xc0"
    assert Bitfield(0).complete


@given(st.data(), st.integers(0, 100))
def test_bitfield_bytes_roundtrip(data: st.DataObject, size: int) -> None:
    members = data.draw(st.sets(st.integers(0, size - 1))) if size else set()
    bits = Bitfield(size)
    for i in members:
        bits.set(i)
    again = Bitfield.from_bytes(bits.to_bytes(), size)
    assert again == bits
    assert again.count == len(members)
    assert list(again) == sorted(members)


@pytest.mark.parametrize(
    ("data", "size", "match"),
    [(b"\x00", 10, "1 bytes for 10"), (b"\x00\x00\x00", 10, "3 bytes"), (b"\x00\x20", 10, "past")],
)
def test_bitfield_from_bytes_validates(data: bytes, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Bitfield.from_bytes(data, size)


def test_bitfield_equality_is_by_content() -> None:
    assert Bitfield(3) == Bitfield(3)
    assert Bitfield(3) != Bitfield(4)
    assert Bitfield(3) != "x"


# ---- rarity index ------------------------------------------------------------------------


def rarity(avail: list[int], seed: int = 0) -> RarityIndex:
    index = RarityIndex(len(avail), seed=seed)
    for i, count in enumerate(avail):
        index.add(i)
        for _ in range(count):
            index.change(i, +1)
    return index


@pytest.mark.parametrize("held", [{0, 1, 2}, set(range(8))])  # both scan strategies
def test_rarity_picks_rarest_held(held: set[int]) -> None:
    index = rarity([3, 1, 2, 1, 5, 0, 2, 2])
    picks = index.rarest(held, 2)
    expected = sorted(held - {5}, key=index.availability)[:2]
    assert [index.availability(i) for i in picks] == [index.availability(i) for i in expected]
    assert set(picks) <= held
    if held == {0, 1, 2}:
        assert picks == [1, 2]


def test_rarity_skips_non_pending_and_tracks_changes() -> None:
    index = rarity([1, 1, 1, 1])
    index.discard(2)
    assert len(index) == 3
    assert 2 not in index
    assert index.rarest(set(range(4)), 10) != []
    assert 2 not in index.rarest(set(range(4)), 10)
    index.change(2, +1)  # availability still tracked while not pending
    assert index.availability(2) == 2
    index.change(0, -1)
    assert list(index.unheld()) == [0]
    index.add(2)
    index.add(2)  # idempotent
    assert len(index) == 4
    assert index.rarest({0, 1, 2, 3}, 0) == []


def test_rarity_ties_depend_on_seed() -> None:
    firsts = {rarity([1] * 64, seed=s).rarest(set(range(64)), 1)[0] for s in range(10)}
    assert len(firsts) > 5
    assert rarity([1] * 64, seed=3).rarest(set(range(64)), 5) == rarity([1] * 64, seed=3).rarest(
        set(range(64)), 5
    )
