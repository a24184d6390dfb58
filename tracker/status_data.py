"""What the status page shows, read from the store in one place (the page itself is pure).

:func:`gather_page` asks the store for every table of ``GET /`` and returns one frozen
:class:`StatusData`; ``tracker.status_page`` only turns that into HTML, so it can be
tested with literals. Two things are derived here rather than stored:

* **Where each blob is**: the holders of every listed blob (``Store.details``, one batch).
* **Not-synced images**: of the most recent tag resolutions (a node resolved
  ``registry/repository:tag`` to a manifest digest against the origin), those whose
  manifest no live node holds whole. Nodes cache and announce the manifests they serve,
  so such a tag was resolved but its image is not (or no longer) in the mesh: the next
  pull of it goes to the origin. A resolution names only the manifest; whether every layer
  of a held manifest is held is what ``shoal status`` checks, image by image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tracker import protocol as p
from tracker.activity import ErrorEvent, TrafficPoint
from tracker.model import BlobDetail, BlobView, HolderView, PeerView, Stats, TransferView

if TYPE_CHECKING:
    from tracker.store import Store

#: A download is shown as stalled after this many announce intervals without progress:
#: nodes report their bytes every interval, so one or two quiet intervals are normal.
STALL_INTERVALS = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class NotSynced:
    """A resolved tag whose manifest no live node holds whole."""

    image: str  # registry/repository:tag
    digest: str
    resolved_at: float
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusData:
    """Everything ``GET /`` shows, read at ``now``."""

    now: float
    stats: Stats
    peers: Sequence[PeerView]
    blobs: Sequence[BlobView]
    where: dict[str, tuple[HolderView, ...]]
    transfers: Sequence[TransferView]
    stall_after: float
    errors: Sequence[ErrorEvent]
    traffic: Sequence[TrafficPoint]
    not_synced: Sequence[NotSynced]
    tags_checked: int


def not_synced(
    tags: Sequence[p.TagRecord], details: dict[str, BlobDetail | None]
) -> list[NotSynced]:
    """The resolutions of ``tags`` (newest first) whose manifest no live node holds whole.

    Args:
        tags: Recent resolutions, newest first (one per tag and Accept set).
        details: Holders of each resolved digest (None: nobody holds or downloads it).

    Returns:
        One row per (image, digest), newest first.
    """
    out: list[NotSynced] = []
    seen: set[tuple[str, str]] = set()
    for t in tags:
        image = f"{t.registry}/{t.repository}:{t.tag}"
        if (image, t.digest) in seen:
            continue
        seen.add((image, t.digest))
        detail = details.get(t.digest)
        holders = () if detail is None else detail.holders
        if any(h.complete for h in holders):
            continue
        reason = (
            f"manifest downloading on {len(holders)} node(s), held whole by none"
            if holders
            else "manifest held by no live node"
        )
        out.append(
            NotSynced(image=image, digest=t.digest, resolved_at=t.resolved_at, reason=reason)
        )
    return out


async def gather_page(store: Store, now: float, *, rows: int, errors: int, tags: int) -> StatusData:
    """Read every table of the status page from ``store``.

    Args:
        store: The tracker's store.
        now: Wall clock (Unix seconds).
        rows: Rows per table (peers, blobs, transfers).
        errors: Recent errors to show.
        tags: Recent tag resolutions to check for "not synced".
    """
    stats = await store.stats(now)
    blobs = await store.blobs(now, offset=0, limit=rows)
    recent = await store.recent_tags(limit=tags)
    wanted = list(dict.fromkeys([b.digest for b in blobs] + [t.digest for t in recent]))
    found = await store.details(wanted, now)
    details: dict[str, BlobDetail | None] = {d: found.get(d) for d in wanted}
    live = TrafficPoint(
        at=now, bytes_from_origin=stats.bytes_from_origin, bytes_from_peers=stats.bytes_from_peers
    )
    stored = await store.traffic()
    return StatusData(
        now=now,
        stats=stats,
        peers=await store.peers(now, offset=0, limit=rows),
        blobs=blobs,
        where={d: x.holders for d, x in details.items() if x is not None},
        transfers=await store.transfers(now, limit=rows),
        stall_after=STALL_INTERVALS * store.policy.announce_interval,
        errors=await store.errors(limit=errors),
        traffic=[*(x for x in stored if x.at < now), live],
        not_synced=not_synced(recent, details),
        tags_checked=len(recent),
    )
