"""What this node can give other peers: pieces of committed blobs and of blobs in flight.

A committed blob is whole; a download in flight offers the pieces it has verified (mesh
downloads track a piece bitfield; plain origin streams offer the pieces inside their
contiguous prefix). Reads are ``pread`` on a descriptor duplicated for the read, so a
concurrent commit (rename) or eviction never hands out a wrong byte: the blob was
verified, or the piece was, before it became readable here.
"""

from __future__ import annotations

import os

from peer.errors import CacheError
from peer.mesh.pieces import Bitfield, PiecePlan
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Download, Flights


def plan_of(download: Download) -> PiecePlan | None:
    if download.plan is not None:
        return download.plan
    if download.size is None:
        return None
    return PiecePlan.for_size(download.size)


def held_pieces(download: Download, plan: PiecePlan) -> Bitfield:
    """The pieces of an in-flight download that are on disk and verified."""
    if download.pieces is not None:
        return Bitfield.from_bytes(download.pieces.to_bytes(), plan.count)
    bits = Bitfield(plan.count)
    for index in range(download.written // plan.piece_size):
        bits.set(index)
    if plan.count and download.written >= plan.size:
        bits.set(plan.count - 1)
    return bits


class LocalPieces:
    """Answers "what do you have of this blob" and "give me piece i" for the swarm."""

    def __init__(self, cache: BlobCache, flights: Flights) -> None:
        self.cache = cache
        self.flights = flights

    def describe(self, digest: str) -> tuple[PiecePlan, Bitfield] | None:
        """The plan and held pieces of ``digest``, or None if we hold nothing of it."""
        try:
            entry = self.cache.get(digest)
        except CacheError:
            return None
        if entry is not None:
            plan = PiecePlan.for_size(entry.size)
            return plan, Bitfield.full(plan.count)
        download = self.flights.get(digest)
        if download is None:
            return None
        in_flight = plan_of(download)
        if in_flight is None:
            return None
        return in_flight, held_pieces(download, in_flight)

    def read(self, digest: str, index: int, offset: int, length: int) -> bytes | None:
        """Bytes of piece ``index`` (from ``offset``, ``length`` long), or None if not held."""
        described = self.describe(digest)
        if described is None:
            return None
        plan, bits = described
        if not (0 <= index < plan.count and index in bits):
            return None
        start, end = plan.span(index)
        if offset < 0 or start + offset + length > end:
            return None
        fd = self._open(digest)
        if fd is None:
            return None
        try:
            data = os.pread(fd, length, start + offset)
        finally:
            os.close(fd)
        return data if len(data) == length else None

    def _open(self, digest: str) -> int | None:
        entry = self.cache.get(digest)
        if entry is not None:
            try:
                return os.open(entry.path, os.O_RDONLY)
            except OSError:
                return None
        download = self.flights.get(digest)
        return download.join() if download is not None else None
