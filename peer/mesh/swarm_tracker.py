"""The swarm's side of the tracker: announces, origin leases, piece hashes, incidents.

:class:`~peer.mesh.swarm.Swarm` inherits this: one node, one object, but the tracker
half reads apart from the links. The node announces itself at start, whenever a download
starts or ends (``announce_soon``; so a flash crowd finds each other at once), and every
interval the tracker names; it backs off while the tracker is down (never past one
interval) and keeps serving through the origin meanwhile. ``tracker_ok`` says whether the
last announce got an answer. Errors worth the tracker's page (``incidents``) travel with
the next announce. Every other call here maps the tracker's failures to "carry on without
it": fetch without a lease, skip a hash record.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING, Final

import trio

from peer.errors import TrackerError, TrackerRejected
from peer.mesh.incidents import IncidentLog
from peer.mesh.pieces import PiecePlan, hash_piece
from peer.mesh.tracker_client import NodeState, TrackerClient, backoff_delay
from tracker import protocol as p

if TYPE_CHECKING:
    from peer.metrics import NodeMetrics
    from peer.mirror.cache import BlobCache

LOGGER = logging.getLogger(__name__)

ANNOUNCE_DEBOUNCE: Final = 0.05
# Our own floor between announces; the tracker refuses faster ones (tracker.model).
MIN_ANNOUNCE_GAP: Final = 0.25


class SwarmTracker:
    """The tracker calls of a :class:`~peer.mesh.swarm.Swarm` (see the module docstring)."""

    def __init__(
        self, *, peer_id: str, cache: BlobCache, tracker: TrackerClient, metrics: NodeMetrics
    ) -> None:
        self.peer_id = peer_id
        self.cache = cache
        self.tracker = tracker
        self.metrics = metrics
        self.tracker_ok = False
        self.incidents = IncidentLog()  # errors for the tracker's page, sent when announcing
        self._announce = trio.Event()
        self._announces_started = 0
        self._announces_done = 0
        self._announced = trio.Event()

    def state(self) -> NodeState:
        """What the next announce tells the tracker about us (the swarm knows)."""
        raise NotImplementedError

    def announce_soon(self) -> None:
        self._announce.set()

    async def _announce_loop(self) -> None:
        rng = random.Random()
        failures = 0
        interval = 10.0
        try:
            while True:
                # A fresh event before the state is read: a change made while this
                # announce is in flight must trigger the next one, not wait an interval.
                self._announce = trio.Event()
                sent_at = trio.current_time()
                self._announces_started += 1
                generation = self._announces_started
                state = self.state()
                try:
                    reply = await self.tracker.announce(state)
                except TrackerRejected as exc:
                    # the tracker is up but refuses (429: too soon; 403: banned; ...)
                    self.tracker_ok = exc.status == 429
                    failures += 1
                    delay = MIN_ANNOUNCE_GAP if exc.status == 429 else backoff_delay(failures, rng)
                    delay = min(delay, interval)
                    LOGGER.info("announce refused, retry in %.1fs: %s", delay, exc)
                except TrackerError as exc:
                    self.tracker_ok = False
                    failures += 1
                    # Back off, but never past one interval: a tracker restarted with an
                    # empty store learns our state within the interval it promised, and a
                    # dead one gets no more announces from us than a live one would.
                    delay = min(backoff_delay(failures, rng), interval)
                    LOGGER.warning("announce failed, retry in %.1fs: %s", delay, exc)
                else:
                    if failures:
                        LOGGER.info("tracker is back after %d failed announces", failures)
                    self.tracker_ok = True
                    self.incidents.delivered(state.errors)
                    failures = 0
                    interval = reply.interval or interval
                    delay = interval * (0.9 + 0.2 * rng.random())
                self._announces_done = generation
                self._announced.set()
                self._announced = trio.Event()
                with trio.move_on_after(delay):
                    await self._announce.wait()
                    # coalesce bursts of changes, and never announce faster than the gap
                    gap = sent_at + MIN_ANNOUNCE_GAP - trio.current_time()
                    await trio.sleep(max(ANNOUNCE_DEBOUNCE, gap))
        finally:
            await self.tracker.leave()

    async def wait_announced(self) -> None:
        """Return once an announce that read our state after this call has been sent
        (whether the tracker took it or not)."""
        target = self._announces_started + 1
        while self._announces_done < target:
            await self._announced.wait()

    async def lease(
        self, digest: str, index: int, ttl: float, count: int = 1, *, insist: bool = False
    ) -> p.LeaseReply:
        """Ask for the origin fetch of pieces ``[index, index + count)`` (a run; the tracker
        may grant fewer, ``reply.count``); ``insist``: even though a complete node holds
        the piece (we cannot get it from the peers we have). Granted when the tracker is
        away (one piece): without coordination we fetch it ourselves."""
        try:
            with trio.CancelScope(shield=True):  # see record_hashes
                reply = await self.tracker.lease(digest, index, ttl=ttl, count=count, insist=insist)
        except TrackerError:
            return p.LeaseReply(granted=True, holder=self.peer_id, expires_at=0.0)
        if not reply.granted and reply.holder == self.peer_id and not reply.capped:
            # ours already (a capped refusal may name us: our lease of another piece)
            return dataclasses.replace(reply, granted=True, count=1)
        return reply

    async def release(self, digest: str, index: int, count: int = 1) -> None:
        """Give back our leases on pieces ``[index, index + count)``; best effort."""
        try:
            with trio.CancelScope(shield=True):  # see record_hashes
                await self.tracker.lease(digest, index, ttl=0.0, count=count)
        except TrackerError:
            pass  # they expire on their own

    async def record_hashes(self, digest: str, plan: PiecePlan, values: dict[int, bytes]) -> None:
        """Record the hashes of pieces we fetched from the origin, in one call."""
        hashes = [b""] * plan.count
        for index, value in values.items():
            hashes[index] = value
        try:
            # Shielded: a fetch that completes cancels its request tasks, and an httpx
            # request cancelled half-way can leave the client's pool unusable; this call is
            # short (the client's own timeout bounds it).
            with trio.CancelScope(shield=True):
                await self.tracker.put_piece_hashes(
                    digest, size=plan.size, piece_size=plan.piece_size, hashes=hashes
                )
        except TrackerError as exc:
            LOGGER.info("could not record piece hashes of %s: %s", digest, exc)

    async def piece_hashes(self, digest: str) -> p.PieceHashes | None:
        with trio.CancelScope(shield=True):  # see record_hashes
            record = await self.tracker.get_piece_hashes(digest)
        return record

    def report_bad_peer(self, peer: str, digest: str) -> None:
        """Count the ban; the tracker hears of it through the admin log (see docs)."""
        self.metrics.peers_banned.inc()
        LOGGER.warning("peer %s sent corrupt data for %s: banned for this blob", peer, digest)
        self.incidents.note(
            time.time(), "piece_hash", f"peer {peer} sent a piece of {digest} whose hash did "
            "not match: banned for this blob",
        )  # fmt: skip

    async def publish_hashes(self, digest: str) -> None:
        """Record the piece hashes of a blob we hold whole and verified (fetched without
        the mesh: streamed from the origin), so peers can check what we serve them."""
        entry = self.cache.get(digest)
        if entry is None or not self.tracker_ok:
            return
        plan = PiecePlan.for_size(entry.size)
        if plan.count <= 1:
            return  # a one-piece blob is checked against its digest

        def compute() -> list[bytes]:
            with open(entry.path, "rb") as file:
                return [hash_piece(file.read(plan.length(i))) for i in range(plan.count)]

        try:
            hashes = await trio.to_thread.run_sync(compute)
            await self.tracker.put_piece_hashes(
                digest, size=plan.size, piece_size=plan.piece_size, hashes=hashes
            )
        except (OSError, TrackerError) as exc:
            LOGGER.info("could not publish piece hashes of %s: %s", digest, exc)
