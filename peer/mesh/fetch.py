"""One blob through the mesh: pieces from peers and, once per cluster, from the origin.

Theory of operation
-------------------
A :class:`BlobFetch` drives a :class:`~peer.mesh.scheduler.PieceScheduler` for one blob
and does what it says, each request in its own task:

* **From a peer**: ``Request`` on the link, bounded by a timeout; the answer is checked
  against the SHA-256 piece hash the tracker holds, recorded by the node that fetched that
  piece from the origin — a peer cannot make up both the bytes and the hash. A bad piece
  bans the sender for this blob and is reported to the tracker.
* **From the origin**: first a short lease at the tracker, so that across the cluster one
  node fetches each piece range; then an HTTP ``Range`` GET, with the lease renewed every
  ``LEASE_TTL / 2`` while it runs; then the piece's hash goes to the tracker *before* we
  tell anyone we have it, which also ends our fetch there (the lease stops counting
  against the blob's cap and lapses; a failed or abandoned fetch releases it at once).
  The lease asks for a *run*: the piece and those after it that we still need, up to
  ``RUN_BYTES``, granted only to a node alone on the blob; a run is one range request
  whose pieces are taken as they arrive, one origin slot for all of them
  (:mod:`peer.mesh.fetch_origin`, which holds this origin half). Hash records are
  batched: one tracker call in flight per blob, carrying every piece that came in
  meanwhile. A lease
  refused because another node holds it means that node is on it: we back off that piece
  and get it from that node. One refused because the cluster already has as many origin
  fetches of the blob in flight as the tracker allows (``capped``) pauses the origin for
  every piece, ``ORIGIN_RETRY`` doubling with every capped refusal in a row up to
  ``ORIGIN_RETRY_MAX`` (jittered): the pieces in flight will be on peers soon. If the
  tracker is unreachable we fetch without a lease (correctness first, egress second).

Pieces land out of order in the cache's temp file; the blob hash follows the contiguous
prefix, which is also what the registry endpoint streams to the runtime (the scheduler's
read position, so the pieces the runtime needs next come first). The whole blob is checked
against its digest before it is committed. Every piece we hold is offered to the swarm
while the download is still running (``Have`` to every interested link).
"""

from __future__ import annotations

import logging
import math
import random
from typing import TYPE_CHECKING, Final

import trio

from peer.errors import (
    TrackerError,
    UpstreamUnavailable,
)
from peer.mesh.fetch_origin import LEASE_TTL as LEASE_TTL
from peer.mesh.fetch_origin import ORIGIN_RETRY as ORIGIN_RETRY
from peer.mesh.fetch_origin import ORIGIN_RETRY_MAX as ORIGIN_RETRY_MAX
from peer.mesh.fetch_origin import RELEASE_TIMEOUT, OriginFetch
from peer.mesh.fetch_origin import RUN_BYTES as RUN_BYTES
from peer.mesh.fetch_origin import RUN_CHECK as RUN_CHECK
from peer.mesh.pieces import Bitfield, PiecePlan, hash_piece
from peer.mesh.scheduler import Origin, PieceScheduler, SchedulerConfig
from peer.mesh.wire.messages import Busy, Request

if TYPE_CHECKING:
    from peer.mesh.swarm import Swarm
    from peer.mirror.flight import Download
    from peer.mirror.names import Target
    from peer.mirror.writer import BlobWriter

LOGGER = logging.getLogger(__name__)

# Longest we wait for one piece from a peer before trying someone else (the scheduler
# hedges much earlier on measured speed; this bounds a stalled link).
PEER_PIECE_TIMEOUT: Final = 10.0
# Re-ask the tracker for holders this often while a fetch runs (new nodes join a crowd).
LOOKUP_INTERVAL: Final = 1.0
# A lookup that finds nobody else (or fails) doubles the wait before the next one, up to
# this; one that finds someone starts over. A node pulling a blob nobody else pulls looked
# it up every second for the whole download (~20 tracker requests per containerd pull of
# a 5-layer image, and a request a second per such download at the tracker); nodes that
# start later find it in their own lookups and dial it.
LOOKUP_INTERVAL_MAX: Final = 8.0
# How often the driver re-plans even without events (hedge deadlines, backoffs).
TICK: Final = 0.1
# Origin Range requests one node keeps in flight for one blob. Each costs a lease and a
# hash record at the tracker plus an HTTP request. bench/swarm measured 2 against 6 in an
# 8-node crowd: with 6 the origin's uplink is split 48 ways, pieces arrive late, and more
# of them are fetched twice (egress 1.14 F vs 1.008 F, p50 1.27x vs 1.15x the bound). A
# lone node pulls faster with more; the crowd is what shoal is for.
ORIGIN_SLOTS: Final = 2
# Requests one peer may have from us at once (SchedulerConfig.per_peer; its default, 4,
# is Kraken's pipeline). In a crowd every peer's uplink is shared by everyone asking it:
# queueing 4 pieces at one peer makes each arrive 4x later than one (and late pieces get
# hedged). bench/simulate, 1,000 nodes x 1 GiB with the other changes of issue 8: p50
# 1.13x the bound with 1. With 10 peers that is still 10 requests in flight.
PER_PEER: Final = 1
# ... but with fewer peers than this we keep this many requests in flight between them
# (SchedulerConfig.min_inflight): one request at a time to a lone peer idles its link
# for a round trip plus our per-piece work after every piece. A 1 MiB piece takes 0.8 ms
# at 10 Gbit/s, so a 0.5 ms round trip alone would cost ~40% of a pair's throughput; 4
# is what version 1 pipelined to every peer. A crowd (4 or more peers to ask) is not
# affected.
MIN_INFLIGHT: Final = 4
# Throughput assumed for a peer before its first piece is measured (the scheduler's
# ``initial_rate``; its default, 12.5 MB/s, is a whole 100 Mbit/s link for us alone). In a
# crowd a peer's uplink is shared by everyone asking it: at 160 Mbit/s and 7 requesters
# ~2.9 MB/s each. Guessing high made the first requests to every peer "late" at the 0.5 s
# hedge floor; each late request marks the peer slow for 10 s, and a window piece with
# only slow holders goes to the origin (bench/swarm rolling, 8 nodes: 50 hedges, 140 of
# 256 pieces fetched from the origin twice, egress 1.8 F; with 2.5 MB/s: 11 hedges, 35,
# 1.16 F). A fast peer is measured after its first piece; a stalled one is still hedged
# within 3 x 4 x 1 MiB / 2.5 MB/s = 5 s, under PEER_PIECE_TIMEOUT.
PEER_RATE_GUESS: Final = 2.5e6
# Refresh piece hashes from the tracker at most this often when one is missing.
HASH_REFRESH: Final = 0.1


class BlobFetch(OriginFetch):
    """Fetch ``digest`` (``size`` bytes) for ``download``; see the module docstring."""

    def __init__(
        self,
        swarm: Swarm,
        target: Target,
        digest: str,
        size: int,
        download: Download,
        writer: BlobWriter,
    ) -> None:
        self.swarm = swarm
        self.target = target
        self.digest = digest
        self.plan = PiecePlan.for_size(size)
        self.download = download
        self.writer = writer
        self.scheduler: PieceScheduler[str] = PieceScheduler(
            self.plan,
            config=SchedulerConfig(
                seed=hash(swarm.peer_id) & 0xFFFF,
                per_peer=PER_PEER,
                min_inflight=MIN_INFLIGHT,
                origin_slots=ORIGIN_SLOTS,
                initial_rate=PEER_RATE_GUESS,
            ),
        )
        self.hashes: list[bytes] = [b""] * self.plan.count
        if self.plan.count == 1 and digest.startswith("sha256:"):
            # One piece is the whole blob: its hash is the digest itself.
            self.hashes[0] = bytes.fromhex(digest.partition(":")[2])
        self.have = Bitfield(self.plan.count)
        self.contiguous = 0  # pieces [0, contiguous) are on disk and hashed
        self.peers: set[str] = set()
        self.from_origin = 0
        self.from_peers = 0
        self._tasks: dict[tuple[str | Origin, int], trio.CancelScope] = {}
        self._wake = trio.Event()
        self._hash_refreshed = -math.inf
        self._hash_lock = trio.Lock()
        self._origin_failures = 0
        self._capped = 0  # capped lease refusals in a row
        self._jitter = random.Random(hash((swarm.peer_id, digest)))
        self._fatal: BaseException | None = None
        self._runs = {}
        self._unrecorded = {}
        self._record_wake = trio.Event()
        self._company = trio.Event()
        self._last_progress = trio.current_time()
        download.plan = self.plan
        download.pieces = self.have

    # -- events from the swarm -----------------------------------------------------------
    def on_bitfield(self, peer: str, bits: Bitfield) -> None:
        self.peers.add(peer)
        self._company.set()
        self.scheduler.on_bitfield(peer, bits)
        self.wake()

    def on_have(self, peer: str, index: int) -> None:
        if 0 <= index < self.plan.count:
            self.peers.add(peer)
            self._company.set()
            self.scheduler.on_have(peer, index)
            self.wake()

    def on_company(self) -> None:
        """A peer linked to us for this blob (it may have sent nothing yet)."""
        self._company.set()

    def on_peer_gone(self, peer: str) -> None:
        self.peers.discard(peer)
        if not self.peers:
            self._company = trio.Event()
        self.scheduler.on_peer_gone(peer)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # -- the driver ------------------------------------------------------------------------
    async def run(self, *, stall_timeout: float) -> None:
        """Fetch every piece, verify the blob, commit it. Raises on failure.

        Raises:
            UpstreamError: The origin refused the blob, or nothing arrived for
                ``stall_timeout`` seconds. Raised bare, after the nursery is closed: callers
                map it to an OCI error, which an ExceptionGroup would turn into a 500.
            IntegrityError: The pieces make up a blob that does not match its digest (a
                rotten origin); readers got every byte but the last.
        """
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._discover)
                nursery.start_soon(self._recorder)
                failure = await self._drive(nursery, stall_timeout)
                nursery.cancel_scope.cancel()
            if failure is None:
                self.writer.hash_through(self.plan.size)
                self.writer.verify()  # IntegrityError: readers never get the last byte
                self.download.advance(self.plan.size)
        finally:  # also when cancelled: gathered hashes of pieces we hold go out
            with trio.move_on_after(RELEASE_TIMEOUT, shield=True):
                await self._record()  # the last pieces' hashes: peers need them to check ours
        if failure is not None:
            raise failure

    async def _drive(self, nursery: trio.Nursery, stall_timeout: float) -> BaseException | None:
        """Start piece requests as the scheduler asks until every piece is in; returns the
        failure that ended it early, if any."""
        while not self.scheduler.done:
            if self._fatal is not None:
                return self._fatal
            if trio.current_time() - self._last_progress > stall_timeout:
                return UpstreamUnavailable(
                    f"no piece of {self.digest} arrived for {stall_timeout:.0f}s "
                    "(origin and peers failing)"
                )
            for assignment in self.scheduler.next_requests(trio.current_time()):
                key = (assignment.source, assignment.piece)
                scope = trio.CancelScope()
                self._tasks[key] = scope
                nursery.start_soon(self._one, assignment.source, assignment.piece, scope)
            self._wake = trio.Event()
            with trio.move_on_after(TICK):
                await self._wake.wait()
        return None

    async def _discover(self) -> None:
        """Keep finding holders (complete or in progress) and open links to them.

        Once at the start, again as soon as our own announce of this download is out (at
        most one interval later), then every interval. In a flash crowd the first lookup
        finds nobody (nobody has announced yet); the second finds everyone who started
        with us, where version 1 waited a whole interval for its next try. Lookups that
        find nobody else come less often (``LOOKUP_INTERVAL_MAX``).
        """
        await self.swarm.find_peers(self.digest, self)
        with trio.move_on_after(LOOKUP_INTERVAL):
            await self.swarm.wait_announced()
        interval = LOOKUP_INTERVAL
        while True:
            found = await self.swarm.find_peers(self.digest, self)
            interval = LOOKUP_INTERVAL if found else min(interval * 2, LOOKUP_INTERVAL_MAX)
            await trio.sleep(interval)

    async def _one(self, source: str | Origin, index: int, scope: trio.CancelScope) -> None:
        try:
            with scope:
                if isinstance(source, Origin):
                    await self._from_origin(index)
                else:
                    await self._from_peer(source, index)
        except Exception as exc:  # per-request boundary: the scheduler re-plans the piece
            LOGGER.debug("piece %d of %s from %s failed: %r", index, self.digest, source, exc)
            self.scheduler.on_timeout(source, index, trio.current_time())
        finally:
            for key in [k for k, task in self._tasks.items() if task is scope]:
                del self._tasks[key]  # (an origin request may have moved: _after_our_run)
            self.wake()

    async def _from_peer(self, peer: str, index: int) -> None:
        link = self.swarm.link(peer)
        if link is None:
            self.scheduler.on_peer_gone(peer)
            return
        length = self.plan.length(index)
        request = Request(digest=self.swarm.raw(self.digest), index=index, length=length)
        with trio.move_on_after(PEER_PIECE_TIMEOUT) as timeout:
            reply = await link.request(request)
        now = trio.current_time()
        if timeout.cancelled_caught:
            self.scheduler.on_timeout(peer, index, now)
            return
        if isinstance(reply, Busy):
            self.scheduler.on_busy(peer, index, now, reply.retry_after)
            return
        expected = await self._hash_of(index)
        if self.scheduler.is_banned(peer):
            # Banned (and this request cancelled) while we waited for the hash: the
            # cancellation comes at our next checkpoint, too late to keep a second bad
            # piece from counting a second ban.
            return
        if not expected:
            # Nobody recorded this piece's hash yet: we cannot check it, so do not take it.
            self.scheduler.on_busy(peer, index, trio.current_time(), 0.2)
            return
        if hash_piece(reply.data) != expected:
            LOGGER.warning("peer %s sent a bad piece %d of %s: banned", peer, index, self.digest)
            self.swarm.metrics.pieces_failed.inc()
            for cancel in self.scheduler.on_piece_bad(peer, index, trio.current_time()):
                self._cancel(cancel.source, cancel.piece)
            self.swarm.report_bad_peer(peer, self.digest)
            return
        self.from_peers += length
        self.swarm.metrics.p2p_bytes.labels("in").inc(length)
        self._accept(peer, index, reply.data)

    def _accept(
        self, source: str | Origin, index: int, data: bytes | bytearray, *, announce: bool = True
    ) -> None:
        if index in self.have:
            return
        start, _ = self.plan.span(index)
        self.writer.write_at(start, data)
        for loser in self.scheduler.on_piece_ok(source, index, trio.current_time()):
            self._cancel(loser.source, loser.piece)
        self.have.set(index)
        self._last_progress = trio.current_time()
        self.swarm.metrics.pieces_verified.inc()
        while self.contiguous < self.plan.count and self.contiguous in self.have:
            self.contiguous += 1
        end = self.plan.span(self.contiguous - 1)[1] if self.contiguous else 0
        if end > self.writer.written:
            # the piece that extends the prefix is hashed from memory, the rest read back
            self.writer.hash_through(end, head=data if start == self.writer.written else b"")
            # the blob's last byte goes out only once the whole blob matches its digest (run)
            self.download.advance(min(end, self.plan.size - 1))
        self.scheduler.set_read_position(self.contiguous)
        if announce:
            self.swarm.broadcast_have(self.digest, index)

    def _cancel(self, source: str | Origin, index: int) -> None:
        run = self._runs.get(index) if isinstance(source, Origin) else None
        if run is not None and any(j not in self.have for j in run.pieces):
            return  # a run goes on for its other pieces (this one is a spare copy)
        scope = self._tasks.pop((source, index), None)
        if scope is not None:
            scope.cancel()

    async def _hash_of(self, index: int) -> bytes:
        if self.hashes[index]:
            return self.hashes[index]
        async with self._hash_lock:
            if not self.hashes[index] and trio.current_time() - self._hash_refreshed > HASH_REFRESH:
                self._hash_refreshed = trio.current_time()
                try:
                    record = await self.swarm.piece_hashes(self.digest)
                except TrackerError:
                    record = None
                if record is not None and record.piece_size == self.plan.piece_size:
                    for i, value in enumerate(record.hashes[: self.plan.count]):
                        if value and not self.hashes[i]:
                            self.hashes[i] = value
        return self.hashes[index]
