"""peer.mirror.spool: bytes reach the cache through the worker, readers never see bad ends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from peer.errors import CacheError, IntegrityError, UpstreamUnavailable
from peer.mirror import spool as spool_module
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Download
from peer.mirror.spool import spool


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _cache(tmp_path: Path) -> BlobCache:
    cache = BlobCache(tmp_path / "cache", max_bytes=1 << 30)
    cache.open()
    return cache


class _Body:
    """A scripted blob body: ``parts`` one read each (split to fit), then ``error`` or EOF."""

    def __init__(self, parts: Sequence[bytes], error: Exception | None = None) -> None:
        self._parts = [part for part in parts if part]
        self._error = error

    async def readinto(self, buffer: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        if not self._parts:
            if self._error is not None:
                raise self._error
            return 0
        part = self._parts[0]
        n = min(len(buffer), len(part))
        buffer[:n] = part[:n]
        if n == len(part):
            self._parts.pop(0)
        else:
            self._parts[0] = part[n:]
        return n


def _watch(download: Download, seen: list[int]) -> None:
    advance = download.advance

    def record(written: int) -> None:
        seen.append(written)
        advance(written)

    download.advance = record  # type: ignore[method-assign]  # spy on the reader wake-ups


@pytest.mark.parametrize("parts", [[b"a" * 1000], [b"ab"] * 500, [b"", b"x" * 999, b"y"]])
async def test_bytes_are_written_hashed_and_handed_to_readers(
    tmp_path: Path, parts: list[bytes]
) -> None:
    data = b"".join(parts)
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(data), expected_size=len(data))
    download = Download(writer.digest)
    download.started(len(data), writer.path)
    seen: list[int] = []
    _watch(download, seen)
    await spool(_Body(parts), writer, download)
    assert writer.written == len(data)
    assert seen == sorted(seen)
    assert seen[-1] == len(data)
    entry = writer.commit("application/octet-stream")
    assert entry.path.read_bytes() == data


async def test_a_wrong_digest_never_releases_the_last_byte(tmp_path: Path) -> None:
    data = b"z" * 5000
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(b"something else!"), expected_size=len(data))
    download = Download(writer.digest)
    download.started(len(data), writer.path)
    seen: list[int] = []
    _watch(download, seen)
    with pytest.raises(IntegrityError, match="hashes to"):
        await spool(_Body([data[:1000], data[1000:]]), writer, download)
    assert all(written < len(data) for written in seen)
    assert not writer.path.exists()  # aborted: the temp file is gone
    assert cache.reserved_bytes == 0


async def test_an_origin_failure_is_raised_and_the_writer_aborted(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(b"x" * 100), expected_size=100)
    download = Download(writer.digest)
    download.started(100, writer.path)
    with pytest.raises(UpstreamUnavailable, match="cut"):
        await spool(_Body([b"x" * 40], UpstreamUnavailable("cut")), writer, download)
    writer.abort()  # what blobs._download's cleanup does: idempotent
    assert not writer.path.exists()
    assert download.written < 100


async def test_too_many_bytes_fail_in_the_worker(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(b"x" * 100), expected_size=100)
    download = Download(writer.digest)
    download.started(100, writer.path)
    with pytest.raises(IntegrityError, match="over the expected"):
        await spool(_Body([b"x" * 60, b"x" * 60]), writer, download)
    assert not writer.path.exists()


async def test_disk_errors_become_cache_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(b"x" * 100), expected_size=100)
    download = Download(writer.digest)
    download.started(100, writer.path)

    def full(*_: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("peer.mirror.cache.os.pwritev", full)
    with pytest.raises(CacheError, match="disk is full"):
        await spool(_Body([b"x" * 100]), writer, download)
    assert not writer.path.exists()


async def test_receiving_waits_while_the_worker_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "BUFFER_SIZE", 100)
    data = bytes(range(256)) * 40
    parts = [data[i : i + 64] for i in range(0, len(data), 64)]
    cache = _cache(tmp_path)
    writer = cache.new_writer(_digest(data), expected_size=len(data))
    download = Download(writer.digest)
    download.started(len(data), writer.path)
    seen: list[int] = []
    _watch(download, seen)
    await spool(_Body(parts), writer, download)
    assert seen[-1] == len(data)
    # every hand-over fits one buffer
    assert all(0 < b - a <= 100 for a, b in zip([0, *seen], seen, strict=False))
    assert writer.commit().path.read_bytes() == data
