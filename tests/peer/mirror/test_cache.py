from __future__ import annotations

import errno
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from peer.errors import CacheError, CacheFull, IntegrityError
from peer.mirror import cache as cache_module
from peer.mirror import writer as writer_module
from peer.mirror.cache import BlobCache

if TYPE_CHECKING:
    from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def blob(n: int, size: int = 100) -> tuple[str, bytes]:
    data = bytes([n]) * size
    return digest_of(data), data


def temp_files(root: Path) -> list[Path]:
    return list((root / "tmp").iterdir())


def opened(root: Path, max_bytes: int = 1000, *, verify: bool = False) -> BlobCache:
    cache = BlobCache(root, max_bytes=max_bytes)
    cache.open(verify=verify)
    return cache


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return opened(tmp_path, 300)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_write_commit_get_round_trip(tmp_path: Path, algorithm: str) -> None:
    cache = opened(tmp_path)
    data = b"layer bytes " * 20
    digest = digest_of(data, algorithm)
    writer = cache.new_writer(digest, expected_size=len(data))
    for start in range(0, len(data), 7):
        writer.write(data[start : start + 7])
    assert writer.written == len(data)
    committed = writer.commit(MANIFEST)

    entry = cache.get(digest)
    assert entry == committed
    assert entry is not None
    assert entry.size == len(data)
    assert entry.media_type == MANIFEST
    assert entry.path.read_bytes() == data
    hexpart = digest.partition(":")[2]
    assert entry.path == tmp_path / "blobs" / algorithm / hexpart[:2] / hexpart
    assert digest in cache
    assert cache.used_bytes == len(data)
    assert cache.reserved_bytes == 0
    assert temp_files(tmp_path) == []


def test_put_bytes_without_media_type(cache: BlobCache) -> None:
    digest, data = blob(1)
    entry = cache.put_bytes(digest, data, None)
    assert entry.media_type is None
    assert entry.path.read_bytes() == data
    assert cache.entries() == [entry]


def test_digest_mismatch_commits_nothing(tmp_path: Path, cache: BlobCache) -> None:
    digest, _ = blob(1)
    writer = cache.new_writer(digest, expected_size=100)
    writer.write(b"x" * 100)
    with pytest.raises(IntegrityError, match="hashes to"):
        writer.commit()
    assert digest not in cache
    assert not writer.path.exists()
    assert temp_files(tmp_path) == []
    assert list((tmp_path / "blobs").rglob("*")) == []
    assert (cache.used_bytes, cache.reserved_bytes) == (0, 0)


def test_short_write_fails_commit(cache: BlobCache) -> None:
    digest, data = blob(1)
    writer = cache.new_writer(digest, expected_size=len(data) + 1)
    writer.write(data)
    with pytest.raises(IntegrityError, match="expected 101"):
        writer.commit()
    assert digest not in cache
    assert not writer.path.exists()


def test_oversize_write_fails_immediately(cache: BlobCache) -> None:
    digest, data = blob(1)
    writer = cache.new_writer(digest, expected_size=len(data) - 1)
    with pytest.raises(IntegrityError, match="over the expected 99"):
        writer.write(data)
    assert not writer.path.exists()
    assert cache.reserved_bytes == 0
    with pytest.raises(CacheError, match="already closed"):
        writer.write(b"x")


def test_abort_is_idempotent_and_releases_reservation(cache: BlobCache) -> None:
    writer = cache.new_writer(blob(1)[0], expected_size=200)
    writer.write(b"partial")
    assert cache.reserved_bytes == 200
    writer.abort()
    writer.abort()
    assert not writer.path.exists()
    assert cache.reserved_bytes == 0
    with pytest.raises(CacheError):
        writer.commit()


def test_disk_full_is_a_cache_error_and_removes_temp(
    cache: BlobCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writer = cache.new_writer(blob(1)[0], expected_size=100)
    monkeypatch.setattr(writer_module, "_write_all", no_space)
    with pytest.raises(CacheError, match="disk is full") as info:
        writer.write(b"abc")
    assert type(info.value) is CacheError
    assert not writer.path.exists()
    assert cache.reserved_bytes == 0


def test_open_removes_leftover_temp_files(tmp_path: Path) -> None:
    cache = opened(tmp_path)
    writer = cache.new_writer(blob(1)[0], expected_size=100)
    writer.write(b"half a download")
    (tmp_path / "tmp" / "abc.type").write_text("stale sidecar draft")
    digest = blob(2)[0]
    shard = tmp_path / "blobs" / "sha256" / digest[7:9]
    shard.mkdir(parents=True)
    orphan = shard / f"{digest[7:]}.type"
    orphan.write_text(MANIFEST)  # crash between sidecar and blob renames

    reopened = BlobCache(tmp_path, max_bytes=1000)
    assert reopened.open() == 0
    assert temp_files(tmp_path) == []
    assert not orphan.exists()
    assert reopened.get(blob(1)[0]) is None


def test_reopen_finds_blobs_and_media_types(tmp_path: Path) -> None:
    cache = opened(tmp_path)
    (d1, b1), (d2, b2) = blob(1), blob(2, 50)
    cache.put_bytes(d1, b1, MANIFEST)
    cache.put_bytes(d2, b2, None)
    (tmp_path / "blobs" / "sha256" / "zz").mkdir()  # not a shard: ignored, not fatal

    reopened = BlobCache(tmp_path, max_bytes=1000)
    assert reopened.open() == 2
    assert reopened.get(d1) == cache.get(d1)
    entry2 = reopened.get(d2)
    assert entry2 is not None
    assert (entry2.size, entry2.media_type) == (50, None)
    assert reopened.used_bytes == 150


def test_reopen_orders_by_mtime_and_enforces_a_smaller_quota(tmp_path: Path) -> None:
    cache = opened(tmp_path)
    entries = [cache.put_bytes(*blob(n), None) for n in range(3)]
    for age, entry in zip([100, 300, 200], entries, strict=True):
        os.utime(entry.path, (age, age))

    reopened = BlobCache(tmp_path, max_bytes=200)
    assert reopened.open() == 2
    assert [e.digest for e in reopened.entries()] == [entries[2].digest, entries[1].digest]
    assert not entries[0].path.exists()


def test_lru_eviction_order(cache: BlobCache) -> None:
    (d1, b1), (d2, b2), (d3, b3), (d4, b4), (d5, b5) = (blob(n) for n in range(5))
    e1 = cache.put_bytes(d1, b1, None)
    e2 = cache.put_bytes(d2, b2, MANIFEST)
    cache.put_bytes(d3, b3, None)
    assert cache.get(d1) is not None  # d2 is now least recently used
    assert d2 in cache  # and `in` does not change that

    cache.put_bytes(d4, b4, None)
    assert [e.digest for e in cache.entries()] == [d3, d1, d4]
    assert not e2.path.exists()
    assert not e2.path.with_name(e2.path.name + ".type").exists()

    assert d3 in cache  # no touch: d3 goes next
    cache.put_bytes(d5, b5, None)
    assert [e.digest for e in cache.entries()] == [d1, d4, d5]
    assert e1.path.exists()
    assert cache.used_bytes == 300


def test_unknown_size_writer_reserves_as_it_grows(cache: BlobCache) -> None:
    cache.put_bytes(*blob(1), None)
    cache.put_bytes(*blob(2), None)
    digest, data = blob(3, 150)
    writer = cache.new_writer(digest, expected_size=None)
    writer.write(data[:100])
    assert (cache.used_bytes, cache.reserved_bytes) == (200, 100)
    writer.write(data[100:])  # needs room: evicts the oldest entry
    assert cache.used_bytes == 100
    writer.commit()
    assert (cache.used_bytes, cache.reserved_bytes) == (250, 0)


def test_unknown_size_writer_over_quota_is_cache_full(cache: BlobCache) -> None:
    writer = cache.new_writer(blob(1)[0], expected_size=None)
    writer.write(b"x" * 300)
    with pytest.raises(CacheFull):
        writer.write(b"x")
    assert not writer.path.exists()
    assert cache.reserved_bytes == 0


def test_pinned_entries_survive_eviction(cache: BlobCache) -> None:
    (d1, b1), (d2, b2), (d3, b3), (d4, b4) = (blob(n) for n in range(4))
    for digest, data in [(d1, b1), (d2, b2), (d3, b3)]:
        cache.put_bytes(digest, data, None)
    with cache.pin(d1) as pinned, cache.pin(d1):
        assert pinned is not None
        assert pinned.digest == d1
        cache.get(d2)
        cache.get(d3)  # d1 is least recently used, but pinned
        cache.put_bytes(d4, b4, None)
        assert d1 in cache
        assert d2 not in cache
    cache.put_bytes(d2, b2, None)  # unpinned again: d1 is the oldest now
    assert d1 not in cache


def test_cache_full_when_everything_is_pinned_evicts_nothing(cache: BlobCache) -> None:
    digests = [cache.put_bytes(*blob(n), None).digest for n in range(3)]
    with cache.pin(digests[0]), cache.pin(digests[1]):
        with pytest.raises(CacheFull, match="pinned"):
            cache.new_writer(blob(9)[0], expected_size=200)
        assert [e.digest for e in cache.entries()] == [digests[2], digests[0], digests[1]]
        cache.new_writer(blob(9)[0], expected_size=100)  # the unpinned one can go
    assert digests[2] not in cache


def test_cache_full_when_a_blob_exceeds_the_quota(cache: BlobCache) -> None:
    digest, data = blob(1)
    cache.put_bytes(digest, data, None)
    with pytest.raises(CacheFull, match="can never fit"):
        cache.new_writer(blob(2)[0], expected_size=301)
    assert digest in cache
    assert cache.reserved_bytes == 0
    cache.new_writer(blob(2)[0], expected_size=300)  # exactly the quota fits


def test_pin_of_a_missing_blob_yields_none(cache: BlobCache) -> None:
    with cache.pin(blob(1)[0]) as entry:
        assert entry is None


def test_remove(cache: BlobCache) -> None:
    digest, data = blob(1)
    entry = cache.put_bytes(digest, data, MANIFEST)
    assert cache.remove(digest) is True
    assert cache.remove(digest) is False
    assert not entry.path.exists()
    assert list(entry.path.parent.iterdir()) == []
    assert cache.used_bytes == 0


def test_recommit_of_the_same_digest_replaces_it(tmp_path: Path, cache: BlobCache) -> None:
    digest, data = blob(1)
    cache.put_bytes(digest, data, None)
    entry = cache.put_bytes(digest, data, MANIFEST)
    assert cache.used_bytes == 100
    assert cache.entries() == [entry]
    cache.put_bytes(digest, data, None)
    reopened = opened(tmp_path)
    assert [(e.digest, e.media_type) for e in reopened.entries()] == [(digest, None)]


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "A" * 64,
        "sha256:../../etc/passwd",
        "sha256:" + "../" * 21 + "a",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "a" * 64 + "\n",
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha384:" + "a" * 96,
        "SHA256:" + "a" * 64,
        "a" * 64,
        "",
    ],
)
def test_invalid_digests_are_refused(tmp_path: Path, cache: BlobCache, digest: str) -> None:
    with pytest.raises(CacheError):
        cache.new_writer(digest, expected_size=1)
    with pytest.raises(CacheError):
        cache.put_bytes(digest, b"x", None)
    with pytest.raises(CacheError):
        cache.get(digest)
    with pytest.raises(CacheError):
        _ = digest in cache
    with pytest.raises(CacheError):
        cache.remove(digest)
    with pytest.raises(CacheError), cache.pin(digest):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "tmp"]
    assert temp_files(tmp_path) == []


def test_verify_removes_a_corrupted_blob(tmp_path: Path) -> None:
    cache = opened(tmp_path)
    (d1, b1), (d2, b2) = blob(1), blob(2)
    bad = cache.put_bytes(d1, b1, MANIFEST)
    cache.put_bytes(d2, b2, None)
    bad.path.write_bytes(b"\x00" * len(b1))  # bit rot, same size

    assert BlobCache(tmp_path, max_bytes=1000).open() == 2  # a plain open trusts the disk
    reopened = BlobCache(tmp_path, max_bytes=1000)
    assert reopened.open(verify=True) == 1
    assert d1 not in reopened
    assert d2 in reopened
    assert not bad.path.exists()
    assert not bad.path.with_name(bad.path.name + ".type").exists()


def test_readers_can_tail_a_download(cache: BlobCache) -> None:
    digest, data = blob(1)
    writer = cache.new_writer(digest, expected_size=len(data))
    with writer.path.open("rb") as reader:
        assert reader.read() == b""
        writer.write(data[:30])
        assert reader.read() == data[:30]
        writer.write(data[30:])
        assert reader.read() == data[30:]
        writer.commit()
        reader.seek(0)
        assert reader.read() == data  # the rename keeps the open file
    assert not writer.path.exists()


def test_writer_needs_an_opened_cache(tmp_path: Path) -> None:
    opened(tmp_path)  # the layout exists, but this instance has no index yet
    with pytest.raises(CacheError, match=r"open\(\) has not been called"):
        BlobCache(tmp_path, max_bytes=10).new_writer(blob(1)[0], expected_size=1)


def test_out_of_order_pieces_commit_once_hashed_through(tmp_path: Path) -> None:
    """P2P pieces land out of order; the hash follows the contiguous prefix."""
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    cache.open()
    data = bytes(range(256)) * 40
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = cache.new_writer(digest, expected_size=len(data))
    writer.write_at(4096, data[4096:])
    writer.hash_through(0)
    assert writer.written == 0
    writer.write_at(0, data[:4096])
    writer.hash_through(len(data))
    entry = writer.commit()
    assert entry.path.read_bytes() == data


def test_out_of_order_piece_outside_blob_is_refused(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    cache.open()
    writer = cache.new_writer("sha256:" + "0" * 64, expected_size=10)
    with pytest.raises(IntegrityError):
        writer.write_at(8, b"abc")
    assert not writer.path.exists()


class _Disk:
    """A stand-in for ``os.statvfs``: a disk with ``free`` bytes left."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: object) -> os.statvfs_result:
        return os.statvfs_result((4096, 1, 0, 0, self.free, 0, 0, 0, 0, 255))


def test_full_disk_evicts_to_make_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk, not only the quota: room is made for what the disk lacks."""
    cache = opened(tmp_path, max_bytes=1 << 30)
    for n in range(3):
        cache.put_bytes(*blob(n, 1000), None)
    disk = _Disk(cache_module._DISK_HEADROOM + 1500)
    monkeypatch.setattr(cache_module.os, "statvfs", disk)
    writer = cache.new_writer(blob(9, 3000)[0], expected_size=3000)  # needs 1500 more
    assert [e.digest for e in cache.entries()] == [blob(2, 1000)[0]]  # two LRU evicted
    writer.abort()


def test_full_disk_with_nothing_to_evict_is_cache_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = opened(tmp_path, max_bytes=1 << 30)
    cache.put_bytes(*blob(1, 1000), None)
    monkeypatch.setattr(cache_module.os, "statvfs", _Disk(cache_module._DISK_HEADROOM + 100))
    with cache.pin(blob(1, 1000)[0]), pytest.raises(CacheFull, match="disk is full"):
        cache.new_writer(blob(2, 5000)[0], expected_size=5000)
    assert len(cache.entries()) == 1  # nothing evicted for a write that cannot happen
    assert temp_files(tmp_path) == []
