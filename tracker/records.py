"""Piece hashes and tag resolutions held in memory (pure), with the origin-fetch leases.

These records help the P2P layer rather than describe the swarm, so they live apart from
the peer/blob tables of ``tracker.registry``. Both are bounded: the least recently updated
piece record or tag is evicted first when a cap is reached (``dict`` keeps insertion
order, and an update re-inserts). :class:`Records` also holds the origin-fetch leases: it
inherits their tables and rules from :class:`tracker.leases.Leases` (runs, soft pieces,
cap entries, contended blobs: see ``tracker.leases``), which read the piece records here.

Piece hashes merge per piece (:func:`merge_hashes`): nodes that fetched different pieces
of one blob from the origin each fill in their own, ``b""`` marking a piece not known
yet. The first hash put for a piece wins; a different one later is counted as a conflict.
A record costs the same whatever its fill, so filling one never evicts another.

"""

from __future__ import annotations

import dataclasses
from typing import Final

from tracker import protocol as p
from tracker.leases import Leases
from tracker.model import Policy

#: Bookkeeping bytes we charge per piece record beyond its hashes (object headers, key).
PIECE_RECORD_OVERHEAD: Final = 256

_TagKey = tuple[str, str, str, str]


def tag_key(q: p.TagQuery | p.TagRecord) -> _TagKey:
    """The identity of a tag resolution."""
    return (q.registry, q.repository, q.tag, q.accept)


def piece_record_cost(record: p.PieceHashes) -> int:
    """Bytes a piece record is charged against ``Policy.max_piece_bytes`` (fill aside)."""
    return PIECE_RECORD_OVERHEAD + 32 * len(record.hashes)


def merge_hashes(
    stored: tuple[bytes, ...], new: tuple[bytes, ...]
) -> tuple[tuple[bytes, ...], int, bool]:
    """Merge a put's hashes into a stored list of the same length, piece by piece.

    An unknown (``b""``) stored entry takes the new one; a known one stays, and a different
    non-empty new value for it is a conflict.

    Returns:
        The merged list, how many entries it newly filled, and whether any conflicted.
    """
    merged = list(stored)
    filled = 0
    conflict = False
    for i, (old, value) in enumerate(zip(stored, new, strict=True)):
        if not value or value == old:
            continue
        if old:
            conflict = True
        else:
            merged[i] = value
            filled += 1
    return tuple(merged), filled, conflict


class Records(Leases):
    """The piece-hash and tag tables, and the lease tables of :class:`Leases`; see the
    module docstring.

    Args:
        policy: Caps (``max_piece_bytes``, ``max_tags``, ``max_leases``,
            ``max_origin_fetches``).
    """

    def __init__(self, policy: Policy) -> None:
        self._pieces: dict[str, p.PieceHashes] = {}
        super().__init__(policy, self._pieces)
        self._piece_bytes = 0
        self.conflicts: dict[str, int] = {}
        self._tags: dict[_TagKey, p.TagRecord] = {}

    @property
    def piece_count(self) -> int:
        """Number of piece-hash records."""
        return len(self._pieces)

    @property
    def tag_count(self) -> int:
        """Number of tag resolutions."""
        return len(self._tags)

    def put_pieces(self, record: p.PieceHashes) -> p.PiecesPutReply:
        """Store a new record, or merge ``record`` into the stored one piece by piece.

        A record of another shape (size, piece size) is a conflict and changes nothing.
        Otherwise unknown pieces take the new hashes (see :func:`merge_hashes`) and the
        record becomes the most recently updated; its ``peer_id`` stays the first writer's.
        Each put that conflicts anywhere counts once in :attr:`conflicts`.
        """
        digest = record.digest
        self._fetched(record)
        current = self._pieces.get(digest)
        if current is not None:
            shape = (current.size, current.piece_size, len(current.hashes))
            if shape != (record.size, record.piece_size, len(record.hashes)):
                filled, conflict = 0, True
            else:
                hashes, filled, conflict = merge_hashes(current.hashes, record.hashes)
                if filled:
                    del self._pieces[digest]  # re-inserted as the most recently updated
                    self._pieces[digest] = dataclasses.replace(current, hashes=hashes)
            if conflict:
                self.conflicts[digest] = self.conflicts.get(digest, 0) + 1
            return p.PiecesPutReply(stored=filled > 0, conflict=conflict)
        cost = piece_record_cost(record)
        while self._pieces and self._piece_bytes + cost > self._policy.max_piece_bytes:
            oldest = next(iter(self._pieces))
            self._piece_bytes -= piece_record_cost(self._pieces.pop(oldest))
            self.conflicts.pop(oldest, None)
        self._pieces[record.digest] = record
        self._piece_bytes += cost
        return p.PiecesPutReply(stored=True)

    def get_pieces(self, digest: str) -> p.PieceHashes | None:
        """The merged piece record of ``digest`` (``b""`` for unknown pieces), if any."""
        return self._pieces.get(digest)

    def put_tag(self, record: p.TagRecord) -> bool:
        """Keep the most recent resolution per key; False if ours was at least as recent."""
        key = tag_key(record)
        current = self._tags.get(key)
        if current is not None:
            if current.resolved_at >= record.resolved_at:
                return False
            del self._tags[key]  # re-inserted below as the most recently updated
        while len(self._tags) >= self._policy.max_tags:
            del self._tags[next(iter(self._tags))]
        self._tags[key] = record
        return True

    def get_tag(self, q: p.TagQuery) -> p.TagRecord | None:
        """The resolution stored for ``q``'s key, if any."""
        return self._tags.get(tag_key(q))

    def recent_tags(self, limit: int) -> list[p.TagRecord]:
        """At most ``limit`` tag resolutions, most recently updated first."""
        return [r for _, r in zip(range(limit), reversed(self._tags.values()), strict=False)]

    def forget(self, digest: str) -> bool:
        """Drop the piece hashes and tag resolutions of ``digest``; True if there were any.

        Leases are left to expire: they live minutes at most.
        """
        found = False
        record = self._pieces.pop(digest, None)
        if record is not None:
            self._piece_bytes -= piece_record_cost(record)
            found = True
        self.conflicts.pop(digest, None)
        for key in [k for k, v in self._tags.items() if v.digest == digest]:
            del self._tags[key]
            found = True
        return found
