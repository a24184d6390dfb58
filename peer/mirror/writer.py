"""One in-progress download into the blob cache: a temp file, its hash, its commit.

Made by :meth:`peer.mirror.cache.BlobCache.new_writer` (see that module for the layout and
the quota). A writer appends through an unbuffered descriptor, so other tasks can tail
:attr:`BlobWriter.path`; pieces may also land out of order (:meth:`BlobWriter.write_at`,
the P2P layer) and are hashed once everything before them is on disk. Its commit
verifies, fsyncs and hands the file to the cache, which renames it into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from peer.errors import CacheError, IntegrityError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from peer.mirror.cache import BlobCache

LOGGER = logging.getLogger("peer.mirror.cache")

_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
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

    def write_at(self, offset: int, data: bytes | bytearray) -> None:
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

    def hash_through(self, end: int, *, head: bytes | bytearray = b"") -> None:
        """Bytes ``[0, end)`` are all on disk: fold ``[written, end)`` into the hash.

        ``head``, if given, is what was just written at ``written`` (the piece that extends
        the prefix): hashed from memory rather than read back.
        """
        fd = self._live_fd()
        with self.abort_on_error("hashing"):
            if head and self.written + len(head) <= end:
                self._hash.update(head)
                self.written += len(head)
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
        unlink_quietly(self.path)
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
            raise os_error(f"{action} {self.digest}", exc) from exc
        except BaseException:
            self.abort()
            raise

    def _live_fd(self) -> int:
        if self._closed or self._fd is None:
            raise CacheError(f"writer for {self.digest} is already closed")
        return self._fd


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


def unlink_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; log (not raise) anything else that goes wrong."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # IsADirectoryError, EACCES...: log and carry on
        LOGGER.warning("could not delete %s: %s", path, exc)


def os_error(action: str, exc: OSError) -> CacheError:
    """The CacheError for ``exc`` while doing ``action`` (a full disk says so)."""
    if exc.errno in _DISK_FULL:
        return CacheError(f"{action}: the cache disk is full ({exc.strerror}); data discarded")
    return CacheError(f"{action}: {exc}")
