"""Re-hashing cached blobs that were loaded from disk: before they are served, and in the
background after start-up.

Theory of operation
-------------------
``BlobCache.open()`` only lists the cache directory, so a node with a 20 GiB cache is
serving within milliseconds of a restart; every blob it found is *unverified*
(:attr:`~peer.mirror.cache.BlobCache.unverified`): a crash, a failing disk or a stray
write may have changed it since it was committed. Re-hashing everything before serving
would hold the node down for minutes (20 GiB at 200 MB/s is 100 s). Instead:

* **before a first serve** — the blob endpoint calls :meth:`Scrub.ensure`, which hashes
  that one blob (concurrent requests share the one hashing); a blob that does not match
  its digest is deleted and the request goes on as a cache miss, so it is fetched again.
  The first hit of each blob after a restart costs one read of it;
* **in the background** — :meth:`Scrub.run` hashes the rest, most recently used first,
  one blob at a time on one worker thread, so that most are verified before anyone asks.

Blobs committed through a writer were verified on the way in and are never listed. A blob
re-committed while it was being hashed is left alone: the new file is the verified one.
Peers need none of this to stay safe (they check every piece we send against the piece
hashes at the tracker); :func:`hash_file` also returns piece hashes for
:mod:`peer.mesh.republish`, which records them again from copies it has just verified.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import trio

from peer.mesh.pieces import hash_piece
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.writer import CacheEntry

LOGGER = logging.getLogger(__name__)

# Reads per hashing step: large enough for sequential disk throughput.
_READ: int = 1 << 20


def hash_file(path: Path, digest: str, piece_size: int | None = None) -> tuple[bool, list[bytes]]:
    """Read ``path`` once: whether it hashes to ``digest``, and its piece hashes.

    Args:
        path: The blob file.
        digest: ``algorithm:hex`` it must match.
        piece_size: Also hash each ``piece_size`` slice (``peer.mesh.pieces``); None skips.

    Raises:
        OSError: The file cannot be read.
    """
    algorithm, _, expected = digest.partition(":")
    whole = hashlib.new(algorithm)
    pieces: list[bytes] = []
    step = piece_size or _READ
    with path.open("rb") as file:
        while chunk := file.read(step):
            whole.update(chunk)
            if piece_size is not None:
                pieces.append(hash_piece(chunk))
    return whole.hexdigest() == expected, pieces


class Scrub:
    """Verifies the blobs a cache loaded from disk; see the module docstring."""

    def __init__(self, cache: BlobCache, metrics: NodeMetrics) -> None:
        self.cache = cache
        self.metrics = metrics
        self._running: dict[str, trio.Event] = {}
        # the background pass uses one thread, so a first serve never queues behind it
        self._background = trio.CapacityLimiter(1)

    async def ensure(self, digest: str) -> CacheEntry | None:
        """Verify ``digest`` if it is still unverified; return its entry, or None.

        None means it is not cached (or no longer: it was corrupt and has been deleted).
        Does not touch the LRU order.
        """
        await self._verify(digest, None)
        return self.cache.peek(digest)

    async def run(self) -> None:
        """Verify every unverified blob, most recently used first; returns when done."""
        todo = [
            e.digest for e in reversed(self.cache.entries()) if e.digest in self.cache.unverified
        ]
        if todo:
            LOGGER.info("verifying %d cached blobs in the background", len(todo))
        bad = 0
        for digest in todo:
            bad += not await self._verify(digest, self._background)
        if todo:
            LOGGER.info("cache verified: %d blobs, %d corrupt and deleted", len(todo), bad)

    async def piece_hashes(self, digest: str, piece_size: int) -> list[bytes] | None:
        """The piece hashes of cached ``digest``, from a read that also checks its digest.

        Returns None if it is not cached, or was corrupt (and has been deleted).
        """
        entry = self.cache.peek(digest)
        if entry is None:
            return None
        good, pieces = await self._hash(entry, piece_size, self._background)
        if self.cache.peek(digest) is not entry:
            return None  # evicted or re-committed while we read it
        if not good:
            self.mark_corrupt(entry)
            return None
        self.cache.unverified.discard(digest)
        return pieces

    def mark_corrupt(self, entry: CacheEntry) -> None:
        """Delete a cached blob that failed a check (unless it was re-committed since)."""
        if self.cache.peek(entry.digest) is entry:
            LOGGER.warning(
                "cached blob %s does not match its digest: deleted, it will be fetched again",
                entry.digest,
            )
            self.cache.remove(entry.digest)
            self.metrics.cache_corrupt.inc()
            self.metrics.cache_bytes.set(self.cache.used_bytes)
            self.metrics.cache_entries.set(len(self.cache.entries()))

    async def _hash(
        self, entry: CacheEntry, piece_size: int | None, limiter: trio.CapacityLimiter | None
    ) -> tuple[bool, list[bytes]]:
        try:
            return await trio.to_thread.run_sync(
                hash_file,
                entry.path,
                entry.digest,
                piece_size,
                limiter=limiter,
                abandon_on_cancel=True,  # a shutdown does not wait for a long read
            )
        except OSError as exc:
            LOGGER.warning("cannot read cached blob %s: %s", entry.path, exc)
            return False, []

    async def _verify(self, digest: str, limiter: trio.CapacityLimiter | None) -> bool:
        """False if ``digest`` was found corrupt (and deleted)."""
        while digest in self.cache.unverified:
            running = self._running.get(digest)
            if running is not None:
                await running.wait()
                continue
            entry = self.cache.peek(digest)
            if entry is None:
                return True
            done = self._running[digest] = trio.Event()
            try:
                good, _ = await self._hash(entry, None, limiter)
            finally:
                del self._running[digest]
                done.set()
            if self.cache.peek(digest) is not entry or digest not in self.cache.unverified:
                return True  # evicted, or re-committed by a writer that verified it
            if good:
                self.cache.unverified.discard(digest)
                return True
            self.mark_corrupt(entry)
            return False
        return True
