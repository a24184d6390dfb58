"""Re-hashing blobs loaded from disk: before a first serve, and in the background."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from peer.mesh.pieces import PiecePlan, hash_piece
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.scrub import Scrub


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _reopened(tmp_path: Path, blobs: list[bytes], *, rot: int | None = None) -> BlobCache:
    """A cache holding ``blobs``, reopened as after a restart; blob ``rot`` flipped on disk."""
    cache = BlobCache(tmp_path, max_bytes=1 << 30)
    cache.open()
    for data in blobs:
        cache.put_bytes(_digest(data), data, None)
    assert cache.unverified == set()  # committed through a writer: verified on the way in
    if rot is not None:
        entry = cache.peek(_digest(blobs[rot]))
        assert entry is not None
        raw = bytearray(entry.path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        entry.path.write_bytes(bytes(raw))
    again = BlobCache(tmp_path, max_bytes=1 << 30)
    again.open()
    return again


def test_open_lists_what_it_found_as_unverified(tmp_path: Path) -> None:
    blobs = [b"a" * 100, b"b" * 200]
    cache = _reopened(tmp_path, blobs)
    assert cache.unverified == {_digest(b) for b in blobs}
    cache.remove(_digest(blobs[0]))
    assert cache.unverified == {_digest(blobs[1])}
    cache.put_bytes(_digest(blobs[1]), blobs[1], None)  # re-committed: verified
    assert cache.unverified == set()


async def test_ensure_deletes_a_corrupt_blob(tmp_path: Path) -> None:
    blobs = [b"good" * 1000, b"rotten" * 1000]
    cache = _reopened(tmp_path, blobs, rot=1)
    metrics = NodeMetrics()
    scrub = Scrub(cache, metrics)
    assert await scrub.ensure(_digest(blobs[0])) is not None
    assert await scrub.ensure(_digest(blobs[1])) is None
    assert _digest(blobs[1]) not in cache
    assert cache.unverified == set()
    assert "shoal_cache_corrupt_blobs_total 1.0" in metrics.render().decode()


async def test_concurrent_first_serves_share_one_hashing(tmp_path: Path) -> None:
    data = b"x" * (1 << 20)
    cache = _reopened(tmp_path, [data], rot=0)
    scrub = Scrub(cache, NodeMetrics())
    results = []

    async def serve() -> None:
        results.append(await scrub.ensure(_digest(data)))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(serve)
    assert results == [None] * 5
    assert cache.entries() == []


async def test_background_pass_verifies_everything(tmp_path: Path) -> None:
    blobs = [bytes([i]) * (1000 + i) for i in range(6)]
    cache = _reopened(tmp_path, blobs, rot=3)
    await Scrub(cache, NodeMetrics()).run()
    assert cache.unverified == set()
    assert {e.digest for e in cache.entries()} == {
        _digest(b) for i, b in enumerate(blobs) if i != 3
    }


async def test_piece_hashes_only_from_a_verified_copy(tmp_path: Path) -> None:
    data = hashlib.shake_256(b"pieces").digest(3 * 1024 * 1024)
    plan = PiecePlan.for_size(len(data))
    expected = [hash_piece(data[plan.span(i)[0] : plan.span(i)[1]]) for i in range(plan.count)]
    good = _reopened(tmp_path / "good", [data])
    assert await Scrub(good, NodeMetrics()).piece_hashes(_digest(data), plan.piece_size) == expected
    assert good.unverified == set()
    bad = _reopened(tmp_path / "bad", [data], rot=0)
    assert await Scrub(bad, NodeMetrics()).piece_hashes(_digest(data), plan.piece_size) is None
    assert bad.entries() == []
