"""Read-only views of the swarm and the lookup ranking, shared by every store (pure).

The stores (``tracker.registry`` in memory, ``tracker.redis_store`` in Redis) keep state
their own way but answer admin and status queries with these frozen views, and rank
lookup candidates with :func:`rank`, so the two behave the same by construction.

Ranking. A lookup must spread load the way Kraken's pseudo-random graph does: every
asker gets a *bounded random sample* of the holders, biased towards the peers best able to
serve. Candidates fall into tiers, best first:

* tier 0: holds the whole blob and serves nobody right now (``load == 0``);
* tier 1: holds the whole blob and has a free upload slot;
* tier 2: holds part of the blob (in progress) and has a free upload slot;
* tier 3: every upload slot taken (``load >= upload_slots``; 0 slots means "unknown" and
  never counts as saturated).

The answer takes whole tiers in order, shuffled, and samples uniformly from the first
tier that does not fit, so it never exceeds ``limit`` and two askers rarely get the same
list. The asker, expired, banned and draining peers never reach :func:`rank`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")

#: Number of ranking tiers (see the module docstring).
TIERS: Final = 4


def tier_of(*, complete: bool, load: int, upload_slots: int) -> int:
    """The ranking tier of a candidate (0 is best).

    Args:
        complete: The candidate holds the whole blob.
        load: Uploads it serves now.
        upload_slots: Uploads it serves at most (0: unknown).

    Returns:
        0 to ``TIERS - 1``.
    """
    if upload_slots > 0 and load >= upload_slots:
        return 3
    if complete:
        return 0 if load == 0 else 1
    return 2


def rank(candidates: Iterable[tuple[int, T]], *, limit: int, rng: random.Random) -> list[T]:
    """Pick at most ``limit`` candidates, best tier first, randomly within a tier.

    Args:
        candidates: ``(tier, item)`` pairs; the caller has already removed the asker and
            every peer that must not be handed out.
        limit: Most items to return.
        rng: The randomness source (tests pass a seeded ``random.Random``).

    Returns:
        The chosen items, best first.
    """
    tiers: list[list[T]] = [[] for _ in range(TIERS)]
    for tier, item in candidates:
        tiers[tier].append(item)
    chosen: list[T] = []
    for members in tiers:
        room = limit - len(chosen)
        if room <= 0:
            break
        if len(members) > room:
            chosen.extend(rng.sample(members, room))
        else:
            rng.shuffle(members)
            chosen.extend(members)
    return chosen


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerView:
    """One live peer, as the admin API and the status page show it."""

    peer_id: str
    host: str
    port: int
    last_seen: float
    expires_at: float
    held: int
    in_progress: int
    upload_slots: int
    load: int
    bytes_served: int
    bytes_from_origin: int
    bytes_from_peers: int
    draining: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobView:
    """One blob some live peer holds or is downloading."""

    digest: str
    size: int
    holders: int
    in_progress: int


@dataclass(frozen=True, kw_only=True, slots=True)
class HolderView:
    """One peer's share of one blob."""

    peer_id: str
    host: str
    port: int
    complete: bool
    bytes_held: int
    last_seen: float
    draining: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobDetail:
    """A blob with every live peer that holds it (complete first, then by peer id)."""

    digest: str
    size: int
    holders: tuple[HolderView, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferView:
    """A download in progress on some peer.

    ``last_progress`` is when its bytes held last changed (``tracker.activity``), None
    when the store has no record of it.
    """

    peer_id: str
    digest: str
    size: int
    bytes_held: int
    last_progress: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Stats:
    """Totals for /metrics and the status page.

    ``bytes_*`` sum what the live peers reported (their own totals since they started).
    """

    peers: int
    blobs: int
    holdings: int
    in_progress: int
    bytes_served: int
    bytes_from_origin: int
    bytes_from_peers: int
    piece_records: int
    tag_records: int
    leases: int


# Defaults of Policy, each with where the number comes from.
#: Peers re-announce this often: a new holder is visible within one interval.
DEFAULT_ANNOUNCE_INTERVAL: Final = 30.0
#: Three missed announces and a peer is gone (Kraken and BitTorrent use similar ratios).
DEFAULT_PEER_TTL: Final = 90.0
#: Peers announce at once when a download starts, so a flash crowd finds each other within
#: a few hundred milliseconds; peers coalesce changes and never send announces closer than
#: ``peer.mesh.swarm_tracker.MIN_ANNOUNCE_GAP`` (0.25 s). Much faster is a loop bug or a
#: flood: 429. The gap here is counted between the times the tracker handles them, so it
#: leaves room for one handled late: at 0.2 s, a containerd pull through a node on the
#: shared 2-core box drew about one 429 per pull (its previous announce handled >50 ms
#: after it was sent).
DEFAULT_MIN_ANNOUNCE_GAP: Final = 0.1
#: A ban lasts a day unless the operator bans again.
DEFAULT_BAN_SECONDS: Final = 86_400.0
#: 50,000 live peers: five times the largest cluster we design for.
DEFAULT_MAX_PEERS: Final = 50_000
#: Holder entries (peer × blob) across the swarm; ~60 bytes each in memory, so ~300 MB.
DEFAULT_MAX_HOLDINGS: Final = 5_000_000
#: Piece-hash records: 32 bytes per piece, so 64 MiB of hashes covers ~8 TB of blobs.
DEFAULT_MAX_PIECE_BYTES: Final = 64 << 20
#: Tag resolutions: one per (registry, repository, tag, Accept); oldest evicted first.
DEFAULT_MAX_TAGS: Final = 100_000
#: Live origin-fetch leases: a few per blob being pulled cluster-wide at once.
DEFAULT_MAX_LEASES: Final = 100_000
#: Origin fetches of one blob in flight cluster-wide (live leases of one digest; 0: no
#: cap). Enough to keep the origin's uplink busy with a few fetches per node of a small
#: swarm (8 nodes x 2 each); in a crowd of 1,000 it keeps the origin from being split
#: 2,000 ways, so pieces reach the swarm one at a time, fast (bench/simulate: egress
#: 1.00 F and p50 1.13x the bound with 16; docs/tracker.md).
DEFAULT_MAX_ORIGIN_FETCHES: Final = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """Timing and caps of a store; every field defaults to the constant above."""

    announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL
    peer_ttl: float = DEFAULT_PEER_TTL
    min_announce_gap: float = DEFAULT_MIN_ANNOUNCE_GAP
    ban_seconds: float = DEFAULT_BAN_SECONDS
    max_peers: int = DEFAULT_MAX_PEERS
    max_holdings: int = DEFAULT_MAX_HOLDINGS
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
    max_tags: int = DEFAULT_MAX_TAGS
    max_leases: int = DEFAULT_MAX_LEASES
    max_origin_fetches: int = DEFAULT_MAX_ORIGIN_FETCHES
