"""Single flight: one download per digest, readable by every request while it grows.

Theory of operation. The first request for an uncached blob starts a :class:`Download` in the
service's nursery (not the request's, so a client that hangs up does not cancel it and does
not poison the cache). The download writes into a :class:`BlobWriter` temp file and moves
``written`` forward; readers — later requests, Range requests, other peers — each ``dup`` the
download's read descriptor when they join, then ``pread`` the file up to ``written`` and wait
for more. The commit renames the temp file into the cache; open descriptors keep working. A
failed download wakes every reader with the error, and they abort their connections.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Final

import trio

from peer.errors import UpstreamUnavailable
from peer.httpserver import FileBody
from peer.mesh.pieces import Bitfield, PiecePlan

# Largest file range handed out at once while tailing a download.
READ_CHUNK: Final = 8 * 1024 * 1024


class Download:
    """One in-progress blob download; see the module docstring."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.size: int | None = None
        self.media_type: str | None = None
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self.source = "upstream"
        # Set by mesh downloads, which fill pieces out of order (peer.mesh.fetch):
        self.plan: PiecePlan | None = None
        self.pieces: Bitfield | None = None
        self._fd: int | None = None
        self._ready = trio.Event()
        self._progress = trio.Event()
        self._done = trio.Event()

    # -- producer side -------------------------------------------------------------------
    def started(self, size: int, path: os.PathLike[str] | str) -> None:
        """The size is known and the temp file exists: readers may join."""
        self.size = size
        self._fd = os.open(path, os.O_RDONLY)
        self._ready.set()

    def advance(self, written: int) -> None:
        """``written`` contiguous bytes from offset 0 are on disk."""
        self.written = written
        self._progress.set()
        self._progress = trio.Event()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self.done:
            return
        self.error = error
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self._ready.set()
        self._progress.set()
        self._done.set()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- reader side ---------------------------------------------------------------------
    async def wait_ready(self) -> int:
        """Wait until the size is known; returns it. Raises the download's error."""
        await self._ready.wait()
        if self.error is not None and self.size is None:
            raise self.error
        assert self.size is not None
        return self.size

    async def wait_done(self) -> None:
        """Wait until the download is over; raises its error if it failed."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    def join(self) -> int | None:
        """A private read descriptor for the temp file, or ``None`` if the download is over."""
        if self._fd is None:
            return None
        return os.dup(self._fd)

    async def read(self, fd: int, first: int, last: int) -> AsyncIterator[FileBody]:
        """Yield file ranges covering ``first..last`` (inclusive) as they arrive.

        ``fd`` (from :meth:`join`) is closed at the end.

        Raises:
            UpstreamUnavailable: the download failed before reaching ``last``.
        """
        pos = first
        try:
            while pos <= last:
                while self.written <= pos and self.error is None and not self.done:
                    await self._progress.wait()
                if self.error is not None and self.written <= pos:
                    raise UpstreamUnavailable(f"download of {self.digest} failed: {self.error}")
                if self.done and self.written <= pos:
                    raise UpstreamUnavailable(f"download of {self.digest} ended early")
                end = min(self.written, last + 1)
                # The bytes are on disk already: hand out file ranges, which the HTTP
                # server sends with sendfile (no copy through Python).
                while pos < end:
                    n = min(end - pos, READ_CHUNK)
                    yield FileBody(fd, pos, n)
                    pos += n
        finally:
            os.close(fd)


class Flights:
    """The set of downloads in progress, keyed by digest."""

    def __init__(self) -> None:
        self._active: dict[str, Download] = {}

    def get(self, digest: str) -> Download | None:
        return self._active.get(digest)

    def begin(self, digest: str) -> Download:
        """Register a new download; the caller must ``end`` it."""
        assert digest not in self._active
        download = Download(digest)
        self._active[digest] = download
        return download

    def end(self, download: Download) -> None:
        if self._active.get(download.digest) is download:
            del self._active[download.digest]

    def __len__(self) -> int:
        return len(self._active)

    def active(self) -> list[Download]:
        return list(self._active.values())
