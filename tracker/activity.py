"""What the operator dashboard remembers beyond the swarm itself (pure: no I/O, no clock).

The registry answers "who holds what, now". An operator also asks "what went wrong
lately", "how has the origin's share moved over the last hour" and "which downloads stopped
moving". This module keeps the bounded memory those answers need, with the same rules in
both stores (:class:`~tracker.store.MemoryStore` holds an :class:`Activity`;
:class:`~tracker.redis_store.RedisStore` keeps the same three things in Redis lists and
hashes, written by the same decisions, :func:`progress_step` and :func:`due`):

* **Recent errors**, newest first, at most ``MAX_ERRORS``: what nodes report in their
  announces (``Announce.errors``: origin failures, piece hash mismatches, peer bans) and
  what the tracker itself refused on ``/v1`` (bad bodies, conflicts, bans, a full
  registry). Messages are what the sender wrote, capped by the protocol; nodes and the
  tracker keep credentials out of them.
* **Traffic history**: points of the cluster's summed ``bytes_from_origin`` and
  ``bytes_from_peers`` (what live nodes reported, each a total since that node started),
  at most one per ``interval`` and at most ``MAX_POINTS`` of them (the oldest dropped).
* **Transfer progress**: per (peer, blob in progress), the bytes held at the last change
  and when that change was seen. A download whose byte count has not changed for a while
  is *stalled*. Entries of a peer expire ``progress_ttl`` seconds after its last announce
  that listed a download, so a peer that left leaves nothing behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tracker import protocol as p

#: Recent errors kept: a screenful and a half; older ones are in the nodes' own logs.
MAX_ERRORS: Final = 200
#: Traffic points kept: an hour at the default interval.
MAX_POINTS: Final = 360
#: Seconds between traffic points (``--traffic-interval``): fine enough to see a pull.
DEFAULT_TRAFFIC_INTERVAL: Final = 10.0
#: Progress entries outlive a peer's last announce by this many peer TTLs.
PROGRESS_TTL_FACTOR: Final = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorEvent:
    """One recent error: when, who saw it (a peer id or ``"tracker"``), what kind, what."""

    at: float
    source: str
    kind: str
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TrafficPoint:
    """The cluster's summed byte counters at one moment."""

    at: float
    bytes_from_origin: int
    bytes_from_peers: int


def progress_step(old: tuple[int, float] | None, held: int, now: float) -> tuple[int, float]:
    """The new ``(bytes held, last progress)`` of one download after an announce.

    Any change of the byte count counts as progress (a restart that went back to fewer
    bytes is movement too); the same count keeps the old time.
    """
    if old is None or old[0] != held:
        return held, now
    return old


def due(last_at: float | None, now: float, interval: float) -> bool:
    """Whether a traffic point taken at ``now`` may be stored after one at ``last_at``."""
    return last_at is None or now - last_at >= interval


class Activity:
    """The memory store's errors, traffic points and progress (see the module docstring).

    Args:
        progress_ttl: Seconds a peer's progress entries outlive its last announce.
        max_errors: Errors kept.
        max_points: Traffic points kept.
    """

    def __init__(
        self, *, progress_ttl: float, max_errors: int = MAX_ERRORS, max_points: int = MAX_POINTS
    ) -> None:
        self._errors: deque[ErrorEvent] = deque(maxlen=max_errors)
        self._points: deque[TrafficPoint] = deque(maxlen=max_points)
        self._progress: dict[str, tuple[float, dict[str, tuple[int, float]]]] = {}
        self._progress_ttl = progress_ttl

    def note_errors(self, events: Iterable[ErrorEvent]) -> None:
        """Remember ``events`` (given oldest first), dropping the oldest beyond the cap."""
        self._errors.extend(events)

    def errors(self, limit: int) -> list[ErrorEvent]:
        """At most ``limit`` recent errors, newest first."""
        return [e for _, e in zip(range(limit), reversed(self._errors), strict=False)]

    def sample(self, point: TrafficPoint, *, interval: float) -> bool:
        """Store ``point`` unless the last one is younger than ``interval``; True if stored."""
        if not due(self._points[-1].at if self._points else None, point.at, interval):
            return False
        self._points.append(point)
        return True

    def traffic(self) -> list[TrafficPoint]:
        """Every stored traffic point, oldest first."""
        return list(self._points)

    def progress(self, peer_id: str, held: Sequence[tuple[str, int]], now: float) -> None:
        """Record a peer's downloads in progress, ``(digest, bytes held)`` each.

        Only the listed downloads are kept for the peer; an empty list changes nothing
        (its entries then expire, as they do in Redis).
        """
        if not held:
            return
        old = self._progress.get(peer_id, (0.0, {}))[1]
        new = {digest: progress_step(old.get(digest), n, now) for digest, n in held}
        self._progress[peer_id] = (now + self._progress_ttl, new)

    def last_progress(self, peer_id: str, digest: str, now: float) -> float | None:
        """When the bytes held of ``peer_id``'s download of ``digest`` last changed."""
        entry = self._progress.get(peer_id)
        if entry is None or entry[0] <= now:
            return None
        step = entry[1].get(digest)
        return None if step is None else step[1]

    def sweep(self, now: float) -> None:
        """Drop the progress of peers whose entries expired."""
        for peer_id in [i for i, (until, _) in self._progress.items() if until <= now]:
            del self._progress[peer_id]


def downloads(a: p.Announce) -> list[tuple[str, int]]:
    """``(digest, bytes held)`` of an announce's downloads, as the registry counts them.

    A blob listed both held and in progress is held (see ``Registry.announce``).
    """
    held = {b.digest for b in a.held}
    return [(b.digest, b.bytes_held) for b in a.in_progress if b.digest not in held]


def node_errors(a: p.Announce, now: float) -> list[ErrorEvent]:
    """The errors an announce reports, oldest first; a time ahead of ours becomes ours."""
    return [
        ErrorEvent(at=min(e.at, now), source=a.peer_id, kind=e.kind, message=e.message)
        for e in a.errors
    ]
