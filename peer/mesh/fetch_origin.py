"""The origin half of a :class:`~peer.mesh.fetch.BlobFetch`: leases, runs, hash records.

:class:`OriginFetch` is a base of ``BlobFetch`` (one object per blob download, but this
half reads apart from the peers' half): an origin assignment of the scheduler becomes a
lease at the tracker for the piece, or for a *run* of it and the pending pieces after it
(granted only to a node alone on the blob, see docs/tracker.md "Run leases"), then one
``Range`` request (:mod:`peer.mesh.origin`) whose pieces are taken as they arrive, with
the lease renewed and the run cut short where a crowd wants the rest; hashes of origin
pieces go to the tracker in batches (one call in flight) before the pieces are offered.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Final

import trio

from peer.errors import UpstreamDenied, UpstreamError, UpstreamNotFound
from peer.mesh.pieces import Bitfield, PiecePlan, hash_piece
from peer.mesh.scheduler import ORIGIN, Origin, PieceScheduler
from tracker import protocol as p

if TYPE_CHECKING:
    from peer.mesh.swarm import Swarm
    from peer.mirror.names import Target

LOGGER = logging.getLogger("peer.mesh.fetch")

# A lease covers one piece while its holder fetches it from the origin, and is renewed
# every LEASE_TTL / 2 while the fetch runs; recording the piece's hash ends the fetch at
# the tracker (a failed or abandoned one is released), so its length no longer has to
# outlast a slow fetch (version 1 leases were neither renewed nor
# released: at 5 s, 35 of 64 pieces of an 8-node crowd at 40 Mbit/s were fetched 2-4
# times, egress 1.7 F; hence 15 s). Now it only bounds how long a node that died holding
# one blocks that piece, and the tracker's per-blob cap on fetches in flight: keep it well
# under the stall timeout (30 s by default).
LEASE_TTL: Final = 15.0
# A lease refused because the blob's origin fetches in flight are at the tracker's cap:
# ask the origin for nothing for this long, doubled with every such refusal in a row (a
# grant starts over) up to ORIGIN_RETRY_MAX, times a random factor in [0.5, 1.5) so that
# a crowd does not retry in step. Every refusal is a tracker request: bench/simulate with
# a fixed 0.25 s (its recommendation) keeps the cap full, but a 1,000-node x 1 GiB crowd
# then sends the tracker 147,000 lease requests in the 8.9 s the origin is busy, ~16,500/s
# (the tracker's goal is 5,000 requests/s, docs/benchmarks-tracker.md; a lease that times
# out is a fetch without one). Doubling to 4 s: 24,000 requests, ~2,750/s, for p50 1.17x
# the bound instead of 1.13x, p99 1.32x instead of 1.17x, egress 1.02 F instead of 1.00
# (all within issue 8's goals; at 200 nodes x 256 MiB: p50 1.27x instead of 1.32x, a
# third of the requests). Measured with a subclass of bench.sim.model.Simulation.
ORIGIN_RETRY: Final = 0.25
ORIGIN_RETRY_MAX: Final = 4.0
# A lease refused ``capped`` means: the blob's origin fetches in flight are at the cap, or
# a complete node holds the piece (take it from the peers). After this many such refusals
# in a row (pauses of 0.25 + 0.5 + 1 + 2 s, jittered), a node none of whose peers holds
# the piece asks with ``insist``: the tracker then lets it past a complete holder it may
# have banned or cannot reach (never past the cap).
INSIST_AFTER: Final = 4
# A lease release is best effort, on the way out of a piece task (maybe cancelled).
RELEASE_TIMEOUT: Final = 2.0
# Longest run of consecutive pieces asked from the origin in one lease and one request.
# The tracker grants a run only to a node that is alone fetching the blob from the origin
# (in a crowd every fetch stays one piece, spread by the cap); alone, one lease, one range
# request and one hash record per piece (1 MiB for blobs under 500 MiB) cost a lone node
# with a tracker ~40% of its CPU: it pulled 46-60 MiB/s where the plain mirror streams 450.
RUN_BYTES: Final = 64 * 1024 * 1024
# A run's later pieces are preemptible at the tracker: a node arriving and asking for one
# is refused for now and the piece marked wanted. The holder renews its run this often
# (and after its 1st, 2nd, 4th... piece, and after every piece while peers are linked to
# it for the blob), stops its stream where the renewal says the run was cut and releases
# the rest. This is how long a crowd may wait for a run to let go (plus the asker's 0.2 s
# retry).
RUN_CHECK: Final = 0.1
# ... but this often while no peer is linked to us for the blob: a node refused a piece of
# our run is told our name and links to us, and from then on we renew after every piece
# (this only bounds the wait of one that cannot link). A lone download renewing ten times
# a second cost the tracker 10 requests/s for every node pulling a blob nobody else pulls
# (its goal is 5,000 requests/s in all); now about one a second plus six per 64-piece run.
RUN_CHECK_ALONE: Final = 1.0
# Hashes of origin pieces are recorded at the tracker at once while peers are linked to us
# for the blob (they cannot check a piece before); with nobody linked, one record call
# gathers up to this long of pieces, and a node that links meanwhile ends the wait (a node
# asking for a lease on one of them is refused naming us, and links). A lone node with a
# tracker made a call every piece or two: a containerd pull of a 5-layer 300 MiB image
# cost ~120 record calls, ~0.2 CPU-s at the tracker on the same two cores.
RECORD_PAUSE: Final = 1.0


class OriginFetch:
    """The origin side of one blob's fetch (see the module docstring)."""

    swarm: Swarm
    target: Target
    digest: str
    plan: PiecePlan
    scheduler: PieceScheduler[str]
    hashes: list[bytes]
    have: Bitfield
    from_origin: int
    _tasks: dict[tuple[str | Origin, int], trio.CancelScope]
    _origin_failures: int
    _capped: int  # capped lease refusals in a row
    _jitter: random.Random
    _fatal: BaseException | None
    _runs: dict[int, _Run]  # origin runs in flight, by first piece
    _unrecorded: dict[int, bytes]  # hashes of origin pieces to record
    _record_wake: trio.Event
    _company: trio.Event  # set when a peer links to us for the blob (see on_company)

    def _accept(
        self, source: str | Origin, index: int, data: bytes | bytearray, *, announce: bool = True
    ) -> None:
        raise NotImplementedError

    async def _from_origin(self, index: int) -> None:
        now = trio.current_time()
        index, before = self._after_our_run(index, now)
        want = self._run_wanted(index)
        if want > 1:  # ours while we ask: no other slot of ours may lease them meanwhile
            self.scheduler.extend_origin(index, range(index, index + want), now)
        run = self._runs[index] = _Run(range(index, index + want))
        try:
            # after INSIST_AFTER capped refusals in a row, with no peer of ours holding
            # the piece: the origin anyway (the holders the tracker names may be banned
            # by us, or out of our reach)
            insist = self._capped >= INSIST_AFTER and not self.scheduler.availability(index)
            reply = await self.swarm.lease(self.digest, index, LEASE_TTL, want, insist=insist)
            got = max(1, min(reply.count, want)) if reply.granted else 1
            for extra in range(index + got, index + want):  # asked for, not granted
                self.scheduler.on_busy(ORIGIN, extra, trio.current_time(), 0.0)
            if not reply.granted:
                self._refused(index, reply, now)
                return
            self._capped = 0
            run.pieces = range(index, index + got)
            run.end = run.pieces.stop
            await self._stream(run, before)
        finally:
            del self._runs[index]
            run.done.set()

    def _refused(self, index: int, reply: p.LeaseReply, now: float) -> None:
        self.swarm.want_link(reply.holder, self)
        if reply.capped:  # the blob's origin fetches in flight are at the cluster cap
            pause = min(ORIGIN_RETRY * 2**self._capped, ORIGIN_RETRY_MAX)
            pause *= self._jitter.uniform(0.5, 1.5)
            self._capped += 1
            self.scheduler.on_busy(ORIGIN, index, now, pause)
            self.scheduler.pause_origin(now, pause)
            return
        wait = min(max(reply.expires_at - time.time(), 0.2), LEASE_TTL)
        self.scheduler.on_busy(ORIGIN, index, now, wait)

    async def _stream(self, run: _Run, before: _Run | None) -> None:
        """Fetch the leased ``run`` (after ``before``, a run of ours it continues)."""
        failed = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew, run)
                if before is not None:
                    await before.done.wait()
                failed = not await self._fetch_run(run)
                nursery.cancel_scope.cancel()
        finally:
            # The pieces we got wait for their hash record, which ends their fetch at the
            # tracker (the lease stops counting against the blob's cap, but guards the
            # piece until it expires). The others go back, here and at the tracker: the
            # run failed, was cancelled, or lost pieces to a race.
            lost = [j for j in run.pieces if j not in self.have]
            now = trio.current_time()
            for j in lost:
                self.scheduler.on_busy(ORIGIN, j, now, 1.0 if failed else 0.0)
            if lost:
                with trio.move_on_after(RELEASE_TIMEOUT, shield=True):
                    for first, count in _segments(lost):
                        await self.swarm.release(self.digest, first, count)

    def _after_our_run(self, index: int, now: float) -> tuple[int, _Run | None]:
        """Where this origin request starts, and the run of ours it must wait for.

        A node alone on a blob takes it from the origin in order, one stream at a time:
        a request made while a run of ours is in flight starts where that run ends (if that
        piece is pending) rather than where the scheduler picked, leases its own run at
        once and streams it when the first is done. The runtime's stream flows, and every
        piece joins the blob's hash from memory: two runs streamed side by side had the
        second half read back from disk (40% of a lone node's CPU went to hashing).
        """
        for run in self._runs.values():
            if len(run.pieces) == 1 or run.end != run.pieces.stop:
                continue  # not a run (a crowd is around), or one cut short by the crowd
            if run.end == index:  # the scheduler picked where the run ends: wait for it
                return index, run
            if self.scheduler.move_origin(index, run.end, now):
                scope = self._tasks.pop((ORIGIN, index), None)
                if scope is not None:
                    self._tasks[(ORIGIN, run.end)] = scope
                return run.end, run
        return index, None

    def _run_wanted(self, index: int) -> int:
        """Pieces to ask the tracker for from ``index`` on: ours to fetch, up to a run.

        One until a piece of ours came from the origin: a flash crowd asks at the same
        instant, before the tracker can tell that the blob is contended, and a run granted
        then would hold the crowd back.
        """
        if not self.from_origin:
            return 1
        limit = min(p.MAX_LEASE_RUN, max(1, RUN_BYTES // self.plan.piece_size))
        n = 1
        while n < limit and self.scheduler.is_pending(index + n):
            n += 1
        return n

    async def _renew(self, run: _Run) -> None:
        """Renew the run's leases every ``RUN_CHECK`` while it has pieces to cut
        (``RUN_CHECK_ALONE`` while no peer is linked to us for the blob; with nothing to
        cut, every ``LEASE_TTL / 2``), and also after its 1st, 2nd, 4th... piece and after
        every piece while other nodes are linked to us for this blob: they may want the
        rest of the run (a run's later pieces are preemptible at the tracker), and the
        renewal says where the run was cut; the stream stops there and the rest is
        released. A crowd arriving with us asks at once: checks are densest early."""
        head, count = run.pieces.start, len(run.pieces)
        renewed = trio.current_time()
        while True:
            cuttable = run.next < run.end - 1  # pieces after the one on the wire
            check = RUN_CHECK if self.swarm.linked_for(self.digest) else RUN_CHECK_ALONE
            deadline = renewed + (check if cuttable else LEASE_TTL / 2)
            with trio.move_on_at(deadline):
                await run.moved.wait()
            run.moved = trio.Event()
            now = trio.current_time()
            if now < deadline:  # a piece came in
                got = run.next - head
                if run.next >= run.end - 1:
                    continue  # nothing left to cut
                if got & (got - 1) and not self.swarm.linked_for(self.digest):
                    continue  # not a power of two, and nobody linked
            renewed = now
            reply = await self.swarm.lease(self.digest, head, LEASE_TTL, count)
            if reply.granted and reply.expires_at > 0:  # (0: the tracker did not answer)
                run.end = min(run.end, max(head + reply.count, run.next + 1))

    async def _fetch_run(self, run: _Run) -> bool:
        """Fetch the pieces of ``run`` from the origin in one request; False if it failed."""
        pieces = run.pieces

        def on_piece(k: int, data: bytearray) -> bool:
            index = pieces[k]
            piece_hash = hash_piece(data)
            self.hashes[index] = piece_hash
            self.from_origin += len(data)
            # Ours at once (the runtime may be waiting for it); offered to peers only once
            # its hash is recorded at the tracker, since they cannot check it otherwise.
            self._accept(ORIGIN, index, data, announce=False)
            self._unrecorded[index] = piece_hash
            self._record_wake.set()
            run.next = index + 1
            run.moved.set()
            return run.next < run.end

        try:
            await self.swarm.origin_pieces(
                self.target, self.digest, [self.plan.span(j) for j in pieces], on_piece
            )
        except (UpstreamNotFound, UpstreamDenied) as exc:
            self._fatal = exc
            return False
        except UpstreamError as exc:
            self._origin_failures += 1
            LOGGER.info("origin failed for pieces %s of %s: %s", pieces, self.digest, exc)
            return False
        return True

    async def _recorder(self) -> None:
        """Record the hashes of the pieces we fetched from the origin, then offer them:
        one tracker call for every piece that came in since the last one (gathered for up to
        ``RECORD_PAUSE`` while no peer is linked to us for the blob)."""
        while True:
            await self._record_wake.wait()
            if not self.swarm.linked_for(self.digest):
                with trio.move_on_after(RECORD_PAUSE):
                    await self._company.wait()
            self._record_wake = trio.Event()
            await self._record()

    async def _record(self) -> None:
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, {}
            await self.swarm.record_hashes(self.digest, self.plan, batch)
            for index in sorted(batch):
                self.swarm.broadcast_have(self.digest, index)


class _Run:
    """An origin request for consecutive ``pieces``; it stops before ``end`` (cut short
    when other nodes took later pieces over at the tracker)."""

    __slots__ = ("done", "end", "moved", "next", "pieces")

    def __init__(self, pieces: range) -> None:
        self.pieces = pieces
        self.end = pieces.stop
        self.next = pieces.start  # the piece on the wire now
        self.moved = trio.Event()  # set when a piece came in
        self.done = trio.Event()  # set when the request is over


def _segments(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted piece indexes as ``(first, count)`` runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for index in indexes:
        if out and out[-1][0] + out[-1][1] == index:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((index, 1))
    return out
