"""Pieces: how a blob is cut, how each piece is checked, and who has which.

A blob of ``size`` bytes is cut into ``count`` pieces of ``piece_size`` bytes (the last
one shorter). Every piece fetched from another peer is checked against its SHA-256, a
hash the sender could not have made up alone: the node that fetched that piece from the
origin recorded it at the tracker (``tracker.protocol.PieceHashes``). The whole blob is
still checked against its OCI digest before it enters the cache; piece hashes only let us
blame the right peer early and share pieces before the blob is complete.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from peer.errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

__all__ = [
    "MAX_PIECE_SIZE",
    "MIN_PIECE_SIZE",
    "Bitfield",
    "PieceHasher",
    "PiecePlan",
    "RarityIndex",
    "hash_piece",
    "piece_size_for",
    "piece_size_v1",
    "same_pieces",
    "verify_piece",
]

# Piece size: Dragonfly's rule, a power of two near size / 500, but clamped to
# [1 MiB, 16 MiB] rather than Dragonfly's [4 MiB, 64 MiB] (Kraken uses a flat 4 MB).
# Container layers are mostly tens of MB: a 30 MB layer in 4 MiB pieces is 8 pieces, too
# few to spread over many peers at once or to pipeline; in 1 MiB pieces it is 30. A piece
# is re-shared only once verified, so its size is also the store-and-forward delay per hop
# (1 MiB at 1 Gbit/s ~ 8 ms) and the runtime's time to first byte. Below 1 MiB the
# per-piece costs (a request, a scheduler decision, 32 bytes of hash at the tracker) start
# to dominate. The 16 MiB cap bounds what one frame (and so one link) can pin in memory,
# and with the tracker's 16,384 hashes per blob it admits blobs up to 256 GiB.
#
# We round size / 500 *down* (wire protocol 2). Version 1 rounded up, which gave a 1 GiB
# blob 256 pieces of 4 MiB; down gives 512 of 2 MiB: twice the pieces to spread over a
# crowd and half the store-and-forward delay per hop (bench/simulate, 1,000 nodes x 1 GiB:
# one of the changes of issue 8 that together reach p50 1.13x the bound). The two rules
# agree up to 500 MiB (both clamp to 1 MiB); above, nodes of the two versions cut a blob
# differently, so the swarm does not link them for it (see piece_size_v1).
MIN_PIECE_SIZE: Final = 1 << 20
MAX_PIECE_SIZE: Final = 1 << 24
_TARGET_PIECES: Final = 500


def piece_size_for(blob_size: int) -> int:
    """The piece size for a blob of ``blob_size`` bytes (a power of two, see above)."""
    if blob_size < 0:
        raise ValueError(f"blob size {blob_size} is negative")
    want = max(1, blob_size // _TARGET_PIECES)
    return min(MAX_PIECE_SIZE, max(MIN_PIECE_SIZE, 1 << (want.bit_length() - 1)))


def piece_size_v1(blob_size: int) -> int:
    """The piece size wire protocol 1 nodes use (size / 500 rounded *up* to a power of 2)."""
    if blob_size < 0:
        raise ValueError(f"blob size {blob_size} is negative")
    want = -(-blob_size // _TARGET_PIECES)
    return min(MAX_PIECE_SIZE, max(MIN_PIECE_SIZE, 1 << max(0, (want - 1).bit_length())))


def same_pieces(version: int, blob_size: int) -> bool:
    """Whether a peer speaking wire protocol ``version`` cuts this blob into our pieces."""
    return version >= 2 or piece_size_v1(blob_size) == piece_size_for(blob_size)


@dataclass(frozen=True, slots=True)
class PiecePlan:
    """How a blob of ``size`` bytes is cut into pieces of ``piece_size`` bytes."""

    size: int
    piece_size: int

    def __post_init__(self) -> None:
        if self.size < 0 or self.piece_size < 1:
            raise ValueError(f"bad plan: size={self.size}, piece_size={self.piece_size}")

    @classmethod
    def for_size(cls, size: int) -> PiecePlan:
        """The plan with :func:`piece_size_for` pieces."""
        return cls(size, piece_size_for(size))

    @property
    def count(self) -> int:
        """Number of pieces (0 for an empty blob)."""
        return -(-self.size // self.piece_size)

    def span(self, index: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` of piece ``index``. Raises IndexError outside."""
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} not in [0, {self.count})")
        start = index * self.piece_size
        return start, min(start + self.piece_size, self.size)

    def length(self, index: int) -> int:
        """Bytes in piece ``index``."""
        start, end = self.span(index)
        return end - start

    def index_at(self, offset: int) -> int:
        """The piece holding byte ``offset``. Raises IndexError outside the blob."""
        if not 0 <= offset < self.size:
            raise IndexError(f"offset {offset} not in [0, {self.size})")
        return offset // self.piece_size

    def pieces_for(self, start: int, end: int) -> range:
        """Indexes of the pieces overlapping bytes ``[start, end)`` (e.g. an HTTP Range)."""
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return range(0)
        return range(start // self.piece_size, (end - 1) // self.piece_size + 1)


def hash_piece(data: bytes | bytearray) -> bytes:
    """The raw SHA-256 of one piece (what the tracker stores)."""
    return hashlib.sha256(data).digest()


def verify_piece(plan: PiecePlan, index: int, data: bytes, expected: bytes) -> None:
    """Check a received piece.

    Raises:
        IntegrityError: Wrong length for piece ``index`` or wrong SHA-256.
    """
    if len(data) != plan.length(index):
        raise IntegrityError(f"piece {index}: {len(data)} bytes, expected {plan.length(index)}")
    if hash_piece(data) != expected:
        raise IntegrityError(f"piece {index}: SHA-256 mismatch")


class PieceHasher:
    """Piece hashes of a blob read front to back, e.g. while streaming it from the origin.

    Args:
        plan: The blob's plan; ``update`` must eventually see exactly ``plan.size`` bytes.
    """

    def __init__(self, plan: PiecePlan) -> None:
        self._plan = plan
        self._hashes: list[bytes] = []
        self._current = hashlib.sha256()
        self._filled = 0  # bytes of the current piece seen so far
        self._seen = 0

    def update(self, data: bytes) -> None:
        """Feed the next bytes of the blob. Raises IntegrityError past its end."""
        if self._seen + len(data) > self._plan.size:
            raise IntegrityError(f"blob longer than {self._plan.size} bytes")
        view = memoryview(data)
        while view:
            take = min(len(view), self._plan.piece_size - self._filled)
            self._current.update(view[:take])
            view = view[take:]
            self._filled += take
            self._seen += take
            if self._filled == self._plan.piece_size or self._seen == self._plan.size:
                self._hashes.append(self._current.digest())
                self._current, self._filled = hashlib.sha256(), 0

    def hashes(self) -> tuple[bytes, ...]:
        """All piece hashes. Raises IntegrityError if the blob was cut short."""
        if self._seen != self._plan.size:
            raise IntegrityError(f"blob ended at {self._seen} of {self._plan.size} bytes")
        return tuple(self._hashes)


class Bitfield:
    """A set of piece indexes in ``[0, size)``, stored as bits (piece 0 = MSB of byte 0,
    the BitTorrent and wire layout), with the count kept up to date."""

    __slots__ = ("_bits", "_count", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"bitfield size {size} is negative")
        self._size = size
        self._bits = bytearray((size + 7) // 8)
        self._count = 0

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> Bitfield:
        """Parse the wire layout.

        Raises:
            ValueError: ``data`` is not ``ceil(size / 8)`` bytes, or bits past ``size`` are set.
        """
        field = cls(size)
        if len(data) != len(field._bits):
            raise ValueError(f"bitfield of {len(data)} bytes for {size} pieces")
        if size % 8 and data[-1] & (0xFF >> (size % 8)):
            raise ValueError("bitfield has bits set past its last piece")
        field._bits[:] = data
        field._count = int.from_bytes(data, "big").bit_count()
        return field

    @classmethod
    def full(cls, size: int) -> Bitfield:
        """A bitfield with every piece set."""
        field = cls(size)
        field._bits[:] = b"\xff" * len(field._bits)
        if size % 8:
            field._bits[-1] = (0xFF << (8 - size % 8)) & 0xFF
        field._count = size
        return field

    @property
    def size(self) -> int:
        return self._size

    @property
    def count(self) -> int:
        """Number of pieces set."""
        return self._count

    @property
    def complete(self) -> bool:
        return self._count == self._size

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self._size:
            raise IndexError(f"piece {index} not in [0, {self._size})")
        return index >> 3, 0x80 >> (index & 7)

    def test(self, index: int) -> bool:
        """Whether piece ``index`` is set."""
        byte, mask = self._locate(index)
        return bool(self._bits[byte] & mask)

    __contains__ = test

    def set(self, index: int) -> bool:
        """Set piece ``index``; True if it was not set before."""
        byte, mask = self._locate(index)
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self._count += 1
        return True

    def clear(self, index: int) -> bool:
        """Clear piece ``index``; True if it was set before."""
        byte, mask = self._locate(index)
        if not self._bits[byte] & mask:
            return False
        self._bits[byte] &= ~mask & 0xFF
        self._count -= 1
        return True

    def to_bytes(self) -> bytes:
        """The wire layout (see :meth:`from_bytes`)."""
        return bytes(self._bits)

    def __iter__(self) -> Iterator[int]:
        """Indexes set, ascending (skips empty bytes, so sparse fields iterate fast)."""
        for byte, value in enumerate(self._bits):
            if value:
                for bit in range(8):
                    if value & (0x80 >> bit):
                        yield byte * 8 + bit

    def missing(self) -> Iterator[int]:
        """Indexes not set, ascending."""
        return (i for i in range(self._size) if not self.test(i))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self._size == other._size and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __repr__(self) -> str:
        return f"Bitfield(size={self._size}, count={self._count})"


class RarityIndex:
    """The pieces still to fetch, bucketed by how many peers hold them (rarest first).

    Availability is tracked for every piece; only pieces :meth:`add`-ed (pending) are
    candidates. Buckets hold *ranks*, a per-instance random relabelling of the pieces, so
    that nodes facing the same swarm spread out over equally rare pieces (BitTorrent's
    random tie-break) while each instance stays deterministic for a given ``seed``.

    Args:
        count: Pieces in the blob.
        seed: Seed of the tie-break order.
    """

    def __init__(self, count: int, *, seed: int = 0) -> None:
        self._by_rank = list(range(count))
        random.Random(seed).shuffle(self._by_rank)
        self._rank = [0] * count
        for rank, index in enumerate(self._by_rank):
            self._rank[index] = rank
        self._avail = [0] * count
        self._buckets: dict[int, set[int]] = {}  # availability -> ranks of pending pieces
        self._pending = bytearray(count)
        self._size = 0

    def __len__(self) -> int:
        """Pending pieces."""
        return self._size

    def __contains__(self, index: int) -> bool:
        return bool(self._pending[index])

    def availability(self, index: int) -> int:
        return self._avail[index]

    def add(self, index: int) -> None:
        """Make ``index`` a candidate again (no-op if it is one)."""
        if not self._pending[index]:
            self._pending[index] = 1
            self._buckets.setdefault(self._avail[index], set()).add(self._rank[index])
            self._size += 1

    def discard(self, index: int) -> None:
        """Stop offering ``index`` (requested or verified)."""
        if self._pending[index]:
            self._pending[index] = 0
            level = self._avail[index]
            self._buckets[level].discard(self._rank[index])
            if not self._buckets[level]:
                del self._buckets[level]
            self._size -= 1

    def change(self, index: int, delta: int) -> None:
        """One more (+1) or one fewer (-1) peer holds ``index``."""
        pending = bool(self._pending[index])
        self.discard(index)
        self._avail[index] += delta
        if pending:
            self.add(index)

    def rarest(self, held: Collection[int], want: int) -> list[int]:
        """Up to ``want`` pending pieces out of ``held``, rarest first.

        Costs O(min(len(held), pending pieces)): a peer holding few pieces is scanned by
        its own pieces, a seeder by walking the buckets (where it stops at the first hit).
        """
        if want <= 0:
            return []
        if len(held) < self._size:
            candidates = [i for i in held if self._pending[i]]
            return heapq.nsmallest(want, candidates, key=lambda i: (self._avail[i], self._rank[i]))
        picks: list[int] = []
        for level in sorted(self._buckets):
            if level == 0:
                continue  # ``held`` is a holder's pieces: nothing in it is unheld
            for rank in self._buckets[level]:
                if (index := self._by_rank[rank]) in held:
                    picks.append(index)
                    if len(picks) == want:
                        return picks
        return picks

    def unheld(self) -> Iterator[int]:
        """Pending pieces no peer holds (candidates for the origin), in tie-break order.

        A live view: stop iterating before calling :meth:`discard` or :meth:`change`.
        """
        return (self._by_rank[rank] for rank in self._buckets.get(0, ()))
