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
import errno
import hashlib
import logging
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from peer.errors import CacheError, CacheFull, IntegrityError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

LOGGER = logging.getLogger(__name__)

# OCI image-spec descriptor.md, "Registered algorithms": the encoded part is lowercase hex
# of exactly this length. Other algorithms are refused: we could not verify them.
_HEX_LENGTHS: Final = {"sha256": 64, "sha512": 128}
_HEX_CHARS: Final = frozenset("0123456789abcdef")
_TYPE_SUFFIX: Final = ".type"
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
# Room kept free on the cache disk beyond the blobs themselves: media-type sidecars, directory
# blocks and temp-file metadata (a few pages each on ext4, xfs or tmpfs).
_DISK_HEADROOM: Final = 256 * 1024
# Buffers per pwritev call: Linux's IOV_MAX (UIO_MAXIOV).
_IOV_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A committed blob: its digest, file, size in bytes and media type (None if unknown)."""

    digest: str
    path: Path
    size: int
    media_type: str | None


class BlobWriter:
    """One in-progress download into a temp file under ``<root>/tmp/``.

    Made by :meth:`BlobCache.new_writer`. Any exception out of :meth:`write` or
    :meth:`commit` leaves the writer aborted: temp file deleted, reservation released.

    Attributes:
        digest: The digest the bytes must match.
        path: The temp file; open it read-only to tail the download.
        written: Bytes appended so far.
        expected_size: The announced size, or None if unknown.
    """

    def __init__(
        self, cache: BlobCache, digest: str, *, path: Path, fd: int, expected_size: int | None
    ) -> None:
        self.digest = digest
        self.path = path
        self.written = 0
        self.expected_size = expected_size
        self._cache = cache
        self._fd: int | None = fd
        self._hash = hashlib.new(digest.partition(":")[0])
        self._reserved = expected_size or 0
        self._closed = False
        self._synced = -1  # ``written`` at the last sync_io()

    def write(self, data: bytes) -> None:
        """Append ``data`` to the temp file and the running hash.

        Raises:
            IntegrityError: The bytes would exceed ``expected_size``.
            CacheFull: The size is unknown and the quota cannot hold any more.
            CacheError: The disk is full or failing, or the writer is already closed.
        """
        fd = self._live_fd()
        end = self.written + len(data)
        with self.abort_on_error("writing"):
            if self.expected_size is not None and end > self.expected_size:
                raise IntegrityError(f"{self.digest}: over the expected {self.expected_size} bytes")
            if end > self._reserved:
                self._cache._reserve(end - self._reserved)
                self._reserved = end
            _write_all(fd, data)
        self._hash.update(data)
        self.written = end

    def append_io(self, chunks: Sequence[bytes | bytearray | memoryview]) -> int:
        """The I/O half of :meth:`write` for several chunks, made to run in a worker thread.

        Writes ``chunks`` in order at offset :attr:`written`, folds them into the running
        hash and returns the new end, which the caller passes to :meth:`appended` back on
        the trio thread. It touches only the temp file and the hash (hashlib and
        ``os.pwrite`` release the GIL on large buffers), never the cache's books, so the
        trio thread keeps running meanwhile; nothing else may use this writer until it
        returns. Needs ``expected_size`` (reserved whole by :meth:`BlobCache.new_writer`).
        Errors are raised as they come: wrap the call in :meth:`abort_on_error`.

        Raises:
            IntegrityError: The bytes would exceed ``expected_size`` (or it is unknown).
            OSError: From the disk.
            CacheError: The writer is already closed.
        """
        fd = self._live_fd()
        pos = self.written
        end = pos + sum(len(chunk) for chunk in chunks)
        if self.expected_size is None or end > self.expected_size:
            raise IntegrityError(f"{self.digest}: over the expected {self.expected_size} bytes")
        _pwritev_all(fd, chunks, pos)
        for chunk in chunks:
            self._hash.update(chunk)
        return end

    def appended(self, end: int) -> None:
        """Record an :meth:`append_io` that reached ``end`` (trio thread)."""
        self.written = end

    def verify(self) -> None:
        """Check size and digest of what was written, before readers get the last byte.

        Raises:
            IntegrityError: Size or digest mismatch; the writer is aborted.
        """
        with self.abort_on_error("verifying"):
            self._check()

    def sync_io(self) -> None:
        """``fsync`` the temp file; thread-safe like :meth:`append_io`, so that
        :meth:`commit` does not block the event loop on the disk."""
        os.fsync(self._live_fd())
        self._synced = self.written

    def write_at(self, offset: int, data: bytes) -> None:
        """Write a piece that may arrive out of order (P2P); see :meth:`hash_through`.

        Needs ``expected_size``. Bytes written this way join the running hash only when
        :meth:`hash_through` reads them back, once everything before them is on disk.
        """
        fd = self._live_fd()
        with self.abort_on_error("writing"):
            if self.expected_size is None or offset < 0 or offset + len(data) > self.expected_size:
                raise IntegrityError(f"{self.digest}: piece at {offset} outside the blob")
            view = memoryview(data)
            pos = offset
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n

    def hash_through(self, end: int) -> None:
        """Bytes ``[0, end)`` are all on disk: fold ``[written, end)`` into the hash."""
        fd = self._live_fd()
        with self.abort_on_error("hashing"):
            pos = self.written
            while pos < end:
                chunk = os.pread(fd, min(end - pos, 1 << 20), pos)
                if not chunk:
                    raise CacheError(f"{self.digest}: temp file shorter than {end}")
                self._hash.update(chunk)
                pos += len(chunk)
            self.written = max(self.written, end)

    def commit(self, media_type: str | None = None) -> CacheEntry:
        """Verify, fsync and atomically move the blob into place.

        Args:
            media_type: Recorded in the sidecar and returned by later lookups.

        Returns:
            The committed entry (most recently used).

        Raises:
            IntegrityError: Size or digest mismatch; nothing is committed.
            CacheError: Bad media type, disk error, or the writer is already closed.
        """
        fd = self._live_fd()
        with self.abort_on_error("committing"):
            self._check()
            if media_type is not None and not (media_type and media_type.isprintable()):
                raise CacheError(f"unusable media type {media_type!r} for {self.digest}")
            if self._synced != self.written:
                os.fsync(fd)
            self._fd = None
            os.close(fd)
            entry = self._cache._install(self.digest, self.path, self.written, media_type)
        self._closed = True
        self._cache._release(self)
        return entry

    def abort(self) -> None:
        """Delete the temp file and release the reservation. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        _unlink_quietly(self.path)
        self._cache._release(self)

    def _check(self) -> None:
        if self.expected_size is not None and self.written != self.expected_size:
            raise IntegrityError(
                f"{self.digest}: got {self.written} bytes, expected {self.expected_size}"
            )
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise IntegrityError(f"content hashes to {actual}, expected {self.digest}")

    @contextlib.contextmanager
    def abort_on_error(self, action: str) -> Iterator[None]:
        """Abort on any exception, turning OSError (ENOSPC included) into CacheError."""
        try:
            yield
        except OSError as exc:
            self.abort()
            raise _os_error(f"{action} {self.digest}", exc) from exc
        except BaseException:
            self.abort()
            raise

    def _live_fd(self) -> int:
        if self._closed or self._fd is None:
            raise CacheError(f"writer for {self.digest} is already closed")
        return self._fd


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
                _unlink_quietly(leftover)
            found = self._scan(verify=verify)
        except OSError as exc:
            raise _os_error(f"opening the cache at {self.root}", exc) from exc
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
            raise _os_error(f"creating a temp file for {digest}", exc) from exc
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
            _unlink_quietly(entry.path)
            _unlink_quietly(entry.path.with_name(entry.path.name + _TYPE_SUFFIX))
        return entry

    def _scan(self, *, verify: bool) -> list[tuple[int, CacheEntry]]:
        """Committed blobs on disk as ``(mtime_ns, entry)``; drops orphans and, if asked, rot."""
        found: list[tuple[int, CacheEntry]] = []
        for algorithm in _HEX_LENGTHS:
            for shard in sorted(p for p in (self._blobs / algorithm).glob("??") if p.is_dir()):
                for path in shard.iterdir():
                    if path.name.endswith(_TYPE_SUFFIX):
                        if not path.with_suffix("").exists():
                            _unlink_quietly(path)  # the blob's rename never happened
                        continue
                    name, digest = path.name, f"{algorithm}:{path.name}"
                    valid = len(name) == _HEX_LENGTHS[algorithm] and _HEX_CHARS.issuperset(name)
                    if not valid or name[:2] != shard.name or not path.is_file():
                        LOGGER.warning("ignoring stray file %s", path)
                        continue
                    sidecar = path.with_name(path.name + _TYPE_SUFFIX)
                    if verify and _hash_file(path, algorithm) != name:
                        LOGGER.warning("removing corrupted blob %s", path)
                        _unlink_quietly(path)
                        _unlink_quietly(sidecar)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwritev_all(fd: int, chunks: Sequence[bytes | bytearray | memoryview], pos: int) -> None:
    """Write ``chunks`` back to back at ``pos``: one ``pwritev`` per ``_IOV_MAX`` of them."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    while views:
        n = os.pwritev(fd, views[:_IOV_MAX], pos)
        if not n:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        pos += n
        while views and n >= len(views[0]):  # drop what was written, keep a partial tail
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # IsADirectoryError, EACCES...: log and carry on
        LOGGER.warning("could not delete %s: %s", path, exc)


def _os_error(action: str, exc: OSError) -> CacheError:
    if exc.errno in _DISK_FULL:
        return CacheError(f"{action}: the cache disk is full ({exc.strerror}); data discarded")
    return CacheError(f"{action}: {exc}")
