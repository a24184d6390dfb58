"""The on-disk, content-addressed blob store with an LRU byte quota.

Theory of operation
-------------------
Layout (digests are validated first, per OCI image-spec descriptor.md, so a path holds
nothing but ``[a-z0-9/]`` and traversal is impossible by construction)::

    <root>/blobs/<algorithm>/<hex[:2]>/<hex>         the bytes
    <root>/blobs/<algorithm>/<hex[:2]>/<hex>.type    media type sidecar, if known
    <root>/tmp/                                      in-progress downloads, sidecar drafts

Media types live in per-blob sidecars, not a shared JSON index: a commit or eviction
touches only its own files (no O(entries) rewrite), and the sidecar is renamed into place
before its blob, so a crash leaves at worst an orphan sidecar, which ``open()`` removes.

A :class:`BlobWriter` appends through an unbuffered descriptor, so other tasks can tail
:attr:`BlobWriter.path`; its commit verifies, fsyncs and renames, and open readers keep
the inode. Temp files are never served: ``open()`` deletes what a crash left behind.

Blobs found on disk by ``open()`` are listed in :attr:`BlobCache.unverified` until someone
re-hashes them (:mod:`peer.mirror.scrub` does, in the background and before a first
serve): a crash, a bad disk or a stray write may have changed them behind our back. Blobs
committed by a writer were verified on the way in.

The quota covers committed blobs plus writers' reservations. Making room evicts least
recently used *unpinned* entries only if that frees enough; otherwise it raises
:class:`~peer.errors.CacheFull` and evicts nothing. LRU order lives in memory, seeded on
``open()`` from modification times. Synchronous; call from the single trio thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Final

from peer.errors import CacheError, CacheFull
from peer.mirror.writer import BlobWriter, CacheEntry, os_error, unlink_quietly

if TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = logging.getLogger(__name__)

# OCI image-spec descriptor.md, "Registered algorithms": the encoded part is lowercase hex
# of exactly this length. Other algorithms are refused: we could not verify them.
_HEX_LENGTHS: Final = {"sha256": 64, "sha512": 128}
_HEX_CHARS: Final = frozenset("0123456789abcdef")
_TYPE_SUFFIX: Final = ".type"
# Room kept free on the cache disk beyond the blobs themselves: media-type sidecars, directory
# blocks and temp-file metadata (a few pages each on ext4, xfs or tmpfs).
_DISK_HEADROOM: Final = 256 * 1024


class BlobCache:
    """Content-addressed blobs under ``root``, at most ``max_bytes`` of them.

    Call :meth:`open` once before anything else.

    Attributes:
        root: The cache directory.
        max_bytes: Quota for committed plus reserved bytes.
    """

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._index: OrderedDict[str, CacheEntry] = OrderedDict()  # least recently used first
        self._pins: dict[str, int] = {}
        self._writers: set[BlobWriter] = set()
        self._used = 0
        self._reserved = 0
        self._opened = False
        # Loaded from disk by open() and not re-hashed since (see the module docstring).
        self.unverified: set[str] = set()

    @property
    def used_bytes(self) -> int:
        """Bytes held by committed blobs."""
        return self._used

    @property
    def reserved_bytes(self) -> int:
        """Bytes held for in-progress writers."""
        return self._reserved

    def open(self, *, verify: bool = False) -> int:
        """Create the layout, delete leftover temp files and load the committed blobs.

        Args:
            verify: Re-hash every blob and delete those that do not match their digest.

        Returns:
            The number of blobs in the cache.

        Raises:
            CacheError: The directory is unusable, or writers are still in progress.
        """
        if self._writers:
            raise CacheError("cannot reopen the cache while downloads are in progress")
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.iterdir():
                LOGGER.info("removing leftover temp file %s", leftover)
                unlink_quietly(leftover)
            found = self._scan(verify=verify)
        except OSError as exc:
            raise os_error(f"opening the cache at {self.root}", exc) from exc
        found.sort(key=lambda item: item[0])
        self._index = OrderedDict((entry.digest, entry) for _, entry in found)
        self._used = sum(entry.size for entry in self._index.values())
        self.unverified = set() if verify else set(self._index)
        self._opened = True
        self._make_room(0)  # the quota may have shrunk since the last run
        return len(self._index)

    def get(self, digest: str) -> CacheEntry | None:
        """Return the entry for ``digest`` and mark it most recently used, or None."""
        _split_digest(digest)
        entry = self._index.get(digest)
        if entry is not None:
            self._index.move_to_end(digest)
        return entry

    def peek(self, digest: str) -> CacheEntry | None:
        """Return the entry for ``digest`` without touching the LRU order, or None."""
        _split_digest(digest)
        return self._index.get(digest)

    def __contains__(self, digest: str) -> bool:
        """Whether ``digest`` is committed; does not touch the LRU order."""
        _split_digest(digest)
        return digest in self._index

    def new_writer(self, digest: str, *, expected_size: int | None) -> BlobWriter:
        """Reserve room and start a download into a fresh temp file.

        Args:
            digest: What the bytes must hash to.
            expected_size: The announced size; None reserves as bytes arrive.

        Raises:
            CacheError: Invalid digest or size, cache not opened, or a disk error.
            CacheFull: Not enough unpinned entries can be evicted to make room.
        """
        algorithm, hexpart = _split_digest(digest)
        if not self._opened:
            raise CacheError("BlobCache.open() has not been called")
        if expected_size is not None and expected_size < 0:
            raise CacheError(f"negative expected size {expected_size} for {digest}")
        self._reserve(expected_size or 0)
        path = self._tmp / f"{algorithm}-{hexpart}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._reserved -= expected_size or 0
            raise os_error(f"creating a temp file for {digest}", exc) from exc
        writer = BlobWriter(self, digest, path=path, fd=fd, expected_size=expected_size)
        self._writers.add(writer)
        return writer

    def put_bytes(self, digest: str, data: bytes, media_type: str | None) -> CacheEntry:
        """Store a blob held in memory (a manifest, say) in one go; see :meth:`new_writer`."""
        writer = self.new_writer(digest, expected_size=len(data))
        writer.write(data)
        return writer.commit(media_type)

    @contextlib.contextmanager
    def pin(self, digest: str) -> Iterator[CacheEntry | None]:
        """Keep ``digest`` from being evicted while a client reads it.

        Yields the entry (marked most recently used), or None when it is not cached.
        :meth:`remove` still works on a pinned entry; readers that already opened the
        file keep reading it.
        """
        entry = self.get(digest)
        if entry is None:
            yield None
            return
        self._pins[digest] = self._pins.get(digest, 0) + 1
        try:
            yield entry
        finally:
            self._pins[digest] -= 1
            if not self._pins[digest]:
                del self._pins[digest]

    def remove(self, digest: str) -> bool:
        """Delete a committed blob; return whether it was there."""
        _split_digest(digest)
        return self._drop(digest) is not None

    def entries(self) -> list[CacheEntry]:
        """All committed entries, least recently used first."""
        return list(self._index.values())

    # -- internals used by BlobWriter -------------------------------------------------

    def _reserve(self, nbytes: int) -> None:
        self._make_room(nbytes)
        self._reserved += nbytes

    def _release(self, writer: BlobWriter) -> None:
        self._reserved -= writer._reserved
        writer._reserved = 0
        self._writers.discard(writer)

    def _make_room(self, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            raise CacheFull(f"{nbytes} bytes can never fit in a cache of {self.max_bytes} bytes")
        excess = self._used + self._reserved + nbytes - self.max_bytes
        short = self._disk_shortfall(nbytes) if nbytes else 0
        if short > self._used - self._pinned_bytes():
            raise CacheFull(
                f"the cache disk is full: {nbytes} more bytes do not fit even after evicting"
                f" every unpinned blob ({short} bytes short); free some space on {self.root}"
            )
        excess = max(excess, short)
        victims: list[CacheEntry] = []
        for entry in self._index.values():
            if excess <= 0:
                break
            if entry.digest not in self._pins:
                victims.append(entry)
                excess -= entry.size
        if excess > 0:
            raise CacheFull(
                f"no room for {nbytes} more bytes: the rest of the {self.max_bytes}-byte quota"
                " is pinned by readers or reserved by downloads"
            )
        for victim in victims:
            LOGGER.info("evicting %s (%d bytes)", victim.digest, victim.size)
            self._drop(victim.digest)

    def _disk_shortfall(self, nbytes: int) -> int:
        """Bytes the disk lacks for ``nbytes`` more, after what writers already reserved.

        The quota alone is not enough: the disk may be smaller than the quota, or shared
        with others who fill it. Counting the disk before a download starts turns a full
        disk into eviction, or into a clear refusal before any byte is sent to a client,
        instead of a transfer cut short by ENOSPC half-way.
        """
        try:
            stat = os.statvfs(self.root)
        except OSError:
            return 0  # cannot tell: the quota and ENOSPC handling still apply
        free = stat.f_bavail * stat.f_frsize
        promised = 0  # reserved by writers but not yet allocated on disk
        for writer in self._writers:
            allocated = 0
            if writer._fd is not None:
                with contextlib.suppress(OSError):
                    allocated = os.fstat(writer._fd).st_blocks * 512
            promised += max(0, writer._reserved - allocated)
        return nbytes + promised + _DISK_HEADROOM - free

    def _pinned_bytes(self) -> int:
        return sum(self._index[d].size for d in self._pins if d in self._index)

    def _install(self, digest: str, temp: Path, size: int, media_type: str | None) -> CacheEntry:
        algorithm, hexpart = _split_digest(digest)
        shard = self._blobs / algorithm / hexpart[:2]
        final = shard / hexpart
        sidecar = shard / f"{hexpart}{_TYPE_SUFFIX}"
        shard.mkdir(parents=True, exist_ok=True)
        if media_type is None:
            sidecar.unlink(missing_ok=True)
        else:
            draft = self._tmp / f"{secrets.token_hex(8)}{_TYPE_SUFFIX}"
            with draft.open("wb") as file:
                file.write(media_type.encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(draft, sidecar)
        os.replace(temp, final)
        _fsync_dir(shard)
        old = self._index.pop(digest, None)
        if old is not None:
            self._used -= old.size
        entry = CacheEntry(digest=digest, path=final, size=size, media_type=media_type)
        self._index[digest] = entry
        self._used += size
        self.unverified.discard(digest)
        return entry

    def _drop(self, digest: str) -> CacheEntry | None:
        self.unverified.discard(digest)
        entry = self._index.pop(digest, None)
        if entry is not None:
            self._used -= entry.size
            unlink_quietly(entry.path)
            unlink_quietly(entry.path.with_name(entry.path.name + _TYPE_SUFFIX))
        return entry

    def _scan(self, *, verify: bool) -> list[tuple[int, CacheEntry]]:
        """Committed blobs on disk as ``(mtime_ns, entry)``; drops orphans and, if asked, rot."""
        found: list[tuple[int, CacheEntry]] = []
        for algorithm in _HEX_LENGTHS:
            for shard in sorted(p for p in (self._blobs / algorithm).glob("??") if p.is_dir()):
                for path in shard.iterdir():
                    if path.name.endswith(_TYPE_SUFFIX):
                        if not path.with_suffix("").exists():
                            unlink_quietly(path)  # the blob's rename never happened
                        continue
                    name, digest = path.name, f"{algorithm}:{path.name}"
                    valid = len(name) == _HEX_LENGTHS[algorithm] and _HEX_CHARS.issuperset(name)
                    if not valid or name[:2] != shard.name or not path.is_file():
                        LOGGER.warning("ignoring stray file %s", path)
                        continue
                    sidecar = path.with_name(path.name + _TYPE_SUFFIX)
                    if verify and _hash_file(path, algorithm) != name:
                        LOGGER.warning("removing corrupted blob %s", path)
                        unlink_quietly(path)
                        unlink_quietly(sidecar)
                        continue
                    media_type = sidecar.exists() and sidecar.read_text("utf-8", "replace").strip()
                    stat = path.stat()
                    entry = CacheEntry(digest, path, stat.st_size, media_type or None)
                    found.append((stat.st_mtime_ns, entry))
        return found


def _split_digest(digest: str) -> tuple[str, str]:
    """Return ``(algorithm, hex)`` of a valid digest, or raise CacheError."""
    algorithm, _, hexpart = digest.partition(":")
    length = _HEX_LENGTHS.get(algorithm)
    if length is None:
        raise CacheError(f"unsupported digest {digest!r}: only sha256 and sha512 are accepted")
    if len(hexpart) != length or not _HEX_CHARS.issuperset(hexpart):
        raise CacheError(f"malformed digest {digest!r}: want {length} lowercase hex characters")
    return algorithm, hexpart


def _hash_file(path: Path, algorithm: str) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
