"""Which piece to ask from whom, for one blob: a pure scheduler with ``now`` passed in.

Theory of operation
-------------------
The shell reports what happens (``on_bitfield``/``on_have`` from peers, ``on_piece_ok``
and ``on_piece_bad`` after verification, ``on_busy``/``on_timeout``/``on_peer_gone``) and
asks :meth:`PieceScheduler.next_requests` what to send next; it sends exactly those
requests, and cancels the ``Assignment`` values the ``on_*`` calls hand back. Every
decision is recorded as in flight when it is returned. Sources are opaque hashable peer
keys plus :data:`ORIGIN`, a pseudo-peer meaning "fetch this piece from the origin
registry" (the shell arbitrates that through a tracker lease and reports a refused lease
as ``on_busy(ORIGIN, i, now, retry_after)``, or as ``pause_origin(now, retry_after)`` when
the tracker refused because the cluster already has as many origin fetches of the blob in
flight as it allows: then no piece goes to the origin until the pause ends).

A peer has ``per_peer`` request slots (one while it is marked slow; more when it has
few peers: :mod:`peer.mesh.peerbook`, which keeps what we know of each peer). Each call
to ``next_requests`` fills free request slots in this order:

1. **Hedges.** A request older than ``hedge_factor`` times its expected duration (the
   peer's measured throughput, with the requests queued ahead of it) gets a second
   source, and its peer is marked slow: one request at a time, asked last, for
   ``slow_penalty`` seconds (Dragonfly's "bad parent" test is mean + 3σ; we use k×mean).
   No other holder free? The origin, when allowed.
2. **Streaming window.** The ``window`` pieces from the runtime's read position, so the
   runtime can stream the blob from its first byte while the rest arrives. A window piece
   that no fast peer holds goes to the origin.
3. **Rarest first.** Peers, fastest first, each take the rarest pending pieces they hold
   (availability counts only unbanned peers), ties broken in a per-node random order so
   that nodes spread out over equally rare pieces.
4. **Origin** for pending pieces that no peer holds, up to ``origin_slots`` at once
   (:mod:`peer.mesh.origin_slots` keeps the origin's slots, pauses and refusals).
5. **Endgame.** With ``endgame_pieces`` or fewer pieces missing, every in-flight piece is
   also asked from other holders (up to ``max_sources``); the first copy wins and
   ``on_piece_ok`` returns the losers to cancel (Kraken: threshold = pipeline limit).

A peer that sends a bad piece is banned for this blob: its availability is forgotten and
it is never asked again. Costs: a call is O(peers + assignments) plus, per peer with a
free slot, O(min(pieces it holds, pending pieces)) (see :class:`RarityIndex`); nothing
walks pieces × peers. A piece is in exactly one place: pending (in the rarity index), in
flight (``_inflight``, with one entry per source) or verified (``_have``).

**Origin runs.** The shell may widen an origin request into a *run* of the following
pieces with :meth:`PieceScheduler.extend_origin`: those pieces are in flight from the
origin too, in the one origin slot its first piece took (see :mod:`peer.mesh.origin_slots`).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar

from peer.mesh.origin_slots import OriginSlots
from peer.mesh.peerbook import PeerBook, pick
from peer.mesh.pieces import Bitfield, PiecePlan, RarityIndex

__all__ = ["ORIGIN", "Assignment", "Origin", "PieceScheduler", "SchedulerConfig"]

P = TypeVar("P", bound=Hashable)


class Origin(enum.Enum):
    """The origin registry as a source: a pseudo-peer that has every piece."""

    ORIGIN = "origin"


ORIGIN: Final = Origin.ORIGIN


class Assignment(NamedTuple, Generic[P]):
    """Ask (or cancel) ``piece`` from ``source``."""

    source: P | Origin
    piece: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerConfig:
    """Tuning knobs; the defaults follow Kraken and Dragonfly where they agree."""

    per_peer: int = 4  # outstanding requests per peer (Kraken pipeline_limit is 3)
    # ... raised to ceil(min_inflight / peers) when fewer peers than that can be asked, so
    # that a lone pair still pipelines (0: per_peer is the cap whatever the peer count)
    min_inflight: int = 0
    window: int = 4  # pieces ahead of the read position fetched first
    endgame_pieces: int = 4  # missing pieces at which endgame starts
    max_sources: int = 2  # concurrent requests for one piece (hedge or endgame)
    hedge_factor: float = 3.0  # a request is late after k x its expected duration
    hedge_min: float = 0.5  # ...but never before this many seconds
    initial_rate: float = 12.5e6  # bytes/s assumed before a peer is measured (100 Mbit/s)
    rate_alpha: float = 0.3  # weight of the newest sample in the throughput EWMA
    slow_penalty: float = 10.0  # seconds a late peer stays de-prioritised
    origin: bool = True  # may we suggest fetching from the origin at all
    origin_slots: int = 2  # origin requests in flight at once
    seed: int = 0  # for the per-node random tie-break order


class PieceScheduler(Generic[P]):
    """Scheduling state of one blob.

    Args:
        plan: The blob's piece plan.
        config: Tuning (see :class:`SchedulerConfig`).
        have: Pieces already verified locally (e.g. after a restart).
    """

    def __init__(
        self,
        plan: PiecePlan,
        *,
        config: SchedulerConfig | None = None,
        have: Bitfield | None = None,
    ) -> None:
        self._plan = plan
        self._cfg = cfg = config or SchedulerConfig()
        self._n = n = plan.count
        self._pool = RarityIndex(n, seed=cfg.seed)
        self._have = Bitfield(n)
        self._inflight: dict[int, dict[P | Origin, tuple[float, int]]] = {}  # (issued, seq)
        self._deadlines: list[tuple[float, int, int, P]] = []  # hedge heap, lazy deletion
        self._hedge: set[int] = set()
        self._origin = OriginSlots(enabled=cfg.origin, slots=cfg.origin_slots)
        self._peers: PeerBook[P] = PeerBook(self._pool, self._have)
        self._cursor = 0
        self._seq = 0
        for index in range(n):
            if have is not None and index in have:
                self._have.set(index)
            else:
                self._pool.add(index)

    # ---- queries -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._have.complete

    @property
    def missing(self) -> int:
        return self._n - self._have.count

    @property
    def have(self) -> Bitfield:
        """A copy of the verified pieces (what our own Bitfield message says)."""
        return Bitfield.from_bytes(self._have.to_bytes(), self._n)

    def availability(self, index: int) -> int:
        """How many unbanned known peers hold piece ``index``."""
        return self._pool.availability(index)

    def sources(self, index: int) -> frozenset[P | Origin]:
        """Who piece ``index`` is currently requested from."""
        return frozenset(self._inflight.get(index, ()))

    @property
    def origin_fetches(self) -> int:
        """Origin requests in flight (a run counts once)."""
        return self._origin.busy

    def is_pending(self, index: int) -> bool:
        """Piece ``index`` is neither verified nor in flight."""
        return 0 <= index < self._n and index in self._pool

    def is_banned(self, peer: P) -> bool:
        return self._peers.is_banned(peer)

    def rate(self, peer: P) -> float | None:
        """Measured throughput of ``peer`` in bytes/s (None before its first piece)."""
        state = self._peers.get(peer)
        return None if state is None else state.rate

    # ---- inputs ------------------------------------------------------------------------

    def set_read_position(self, index: int) -> None:
        """The runtime reads piece ``index`` next: the streaming window starts there."""
        self._cursor = min(max(0, index), self._n)

    def on_bitfield(self, peer: P, bits: Bitfield) -> None:
        """``peer`` told us everything it has (replaces what we knew)."""
        if bits.size != self._n:
            raise ValueError(f"bitfield of {bits.size} pieces for a {self._n}-piece blob")
        self._peers.on_bitfield(peer, bits)

    def on_have(self, peer: P, index: int) -> None:
        """``peer`` has piece ``index`` now."""
        if not 0 <= index < self._n:
            raise IndexError(f"piece {index} not in [0, {self._n})")
        self._peers.on_have(peer, index)

    def on_piece_ok(self, source: P | Origin, index: int, now: float) -> list[Assignment[P]]:
        """Piece ``index`` from ``source`` verified. Returns the other requests to cancel."""
        if index in self._have:
            return []
        sources = self._inflight.pop(index, {})
        request = sources.pop(source, None)
        if request is not None:
            self._free_slot(source, index)
            if not isinstance(source, Origin) and (state := self._peers.get(source)) is not None:
                state.measure(self._plan.length(index), request[0], now, self._cfg.rate_alpha)
        for other in sources:
            self._free_slot(other, index)
        self._pool.discard(index)
        self._have.set(index)
        self._hedge.discard(index)
        self._origin.verified(index)
        self._peers.verified(index)
        return [Assignment(other, index) for other in sources]

    def on_piece_bad(self, source: P | Origin, index: int, now: float) -> list[Assignment[P]]:
        """Piece ``index`` from ``source`` failed verification: ban the peer for this blob.

        Returns:
            The banned peer's other requests, to cancel.
        """
        self._release(source, index)
        if isinstance(source, Origin):
            return []
        state = self._peers.get(source)
        cancels = [Assignment(source, j) for j in sorted(state.inflight)] if state else []
        self.on_peer_gone(source)
        self._peers.ban(source)
        return cancels

    def on_peer_gone(self, peer: P) -> None:
        """The link to ``peer`` is gone: its requests return to the pool."""
        state = self._peers.get(peer)
        if state is None:
            return
        for index in list(state.inflight):
            self._release(peer, index)
        self._peers.remove(peer)

    def on_busy(self, source: P | Origin, index: int, now: float, retry_after: float) -> None:
        """``source`` refused the request (Busy, or the origin lease is held elsewhere)."""
        self._release(source, index)
        if isinstance(source, Origin):
            self._origin.refuse(index, now, retry_after)
        elif (state := self._peers.get(source)) is not None:
            state.backoff_until = now + retry_after

    def pause_origin(self, now: float, retry_after: float) -> None:
        """Ask the origin for no piece before ``now + retry_after`` (requests in flight stay)."""
        self._origin.pause(now, retry_after)

    def on_timeout(self, source: P | Origin, index: int, now: float) -> None:
        """The shell gave up on this request (and cancelled it): penalise the peer."""
        self._release(source, index)
        if not isinstance(source, Origin) and (state := self._peers.get(source)) is not None:
            state.penalise(now, self._cfg.slow_penalty)

    def extend_origin(self, first: int, pieces: range, now: float) -> list[int]:
        """The origin request of ``first`` (in flight) also fetches ``pieces``: a run.

        The pieces still pending go in flight from the origin without taking slots; the
        run keeps the slot ``first`` took until each of its pieces is resolved (verified,
        refused, timed out). Returns the pieces taken; the others are verified or asked
        elsewhere already (whatever the run brings of them is a spare copy).
        """
        if ORIGIN not in self._inflight.get(first, {}):
            return []
        taken = [j for j in pieces if j != first and 0 <= j < self._n and j in self._pool]
        if not taken:
            return []
        for index in taken:
            self._seq += 1
            self._inflight.setdefault(index, {})[ORIGIN] = (now, self._seq)
            self._pool.discard(index)
        self._origin.extend_run(first, taken)
        return taken

    def move_origin(self, old: int, new: int, now: float) -> bool:
        """Fetch pending piece ``new`` from the origin in the slot that single-piece origin
        request ``old`` took (``old`` is pending again). False if either does not qualify.
        """
        sources = self._inflight.get(old, {})
        if ORIGIN not in sources or self._origin.in_run(old) or not self.is_pending(new):
            return False
        del sources[ORIGIN]
        if not sources:
            del self._inflight[old]
            self._pool.add(old)
        self._seq += 1
        self._inflight.setdefault(new, {})[ORIGIN] = (now, self._seq)
        self._pool.discard(new)
        return True

    # ---- decisions ---------------------------------------------------------------------

    def next_requests(self, now: float) -> list[Assignment[P]]:
        """What to request next (see the module docstring for the order)."""
        out: list[Assignment[P]] = []
        if self.done:
            return out
        self._expire(now)
        cfg = self._cfg
        free, slots = self._peers.free(
            now, per_peer=cfg.per_peer, min_inflight=cfg.min_inflight, initial_rate=cfg.initial_rate
        )

        def assign(source: P | Origin, index: int) -> None:
            self._assign(source, index, now, slots)
            out.append(Assignment(source, index))

        for index in sorted(self._hedge, key=self._priority):  # 1. hedges
            sources = self._inflight.get(index, {})
            if not sources or len(sources) >= cfg.max_sources:
                self._hedge.discard(index)
            elif (peer := pick(index, free, slots, sources)) is not None:
                assign(peer, index)
                self._hedge.discard(index)
            elif self._origin_ok(index, now):
                assign(ORIGIN, index)
                self._hedge.discard(index)
        for index in range(self._cursor, min(self._cursor + cfg.window, self._n)):  # 2. window
            if index not in self._pool:
                continue
            peer = pick(index, free, slots, ())
            if peer is not None and now >= self._peers[peer].slow_until:
                assign(peer, index)
            elif self._origin_ok(index, now) and not self._peers.fast_holder(index, now):
                assign(ORIGIN, index)
            elif peer is not None:  # slow, but better than nothing
                assign(peer, index)
        for peer, state in free:  # 3. rarest first, fastest peers first
            if not self._pool:
                break
            for index in self._pool.rarest(state.pieces, slots[peer]):
                assign(peer, index)
        for index in self._origin.pick(self._pool.unheld(), now):  # 4. pieces nobody has
            assign(ORIGIN, index)
        if self.missing <= cfg.endgame_pieces:  # 5. endgame
            for index, sources in list(self._inflight.items()):
                if (
                    len(sources) < cfg.max_sources
                    and (peer := pick(index, free, slots, sources)) is not None
                ):
                    assign(peer, index)
        return out

    # ---- internals ---------------------------------------------------------------------

    def _priority(self, index: int) -> tuple[bool, int]:
        return (not self._cursor <= index < self._cursor + self._cfg.window, index)

    def _origin_ok(self, index: int, now: float) -> bool:
        return self._origin.may_ask(index, now) and ORIGIN not in self._inflight.get(index, {})

    def _assign(self, source: P | Origin, index: int, now: float, slots: dict[P, int]) -> None:
        self._seq += 1
        self._inflight.setdefault(index, {})[source] = (now, self._seq)
        self._pool.discard(index)
        if isinstance(source, Origin):
            self._origin.take()
            return
        state = self._peers[source]
        rate = state.rate or self._cfg.initial_rate
        expected = (len(state.inflight) + 1) * self._plan.length(index) / rate
        deadline = now + max(self._cfg.hedge_min, self._cfg.hedge_factor * expected)
        heapq.heappush(self._deadlines, (deadline, self._seq, index, source))
        state.inflight.add(index)
        slots[source] -= 1

    def _expire(self, now: float) -> None:
        """Late requests (past their hedge deadline) want a second source."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq, index, peer = heapq.heappop(self._deadlines)
            request = self._inflight.get(index, {}).get(peer)
            if request is not None and request[1] == seq:
                self._hedge.add(index)
                self._peers[peer].penalise(now, self._cfg.slow_penalty)

    def _free_slot(self, source: P | Origin, index: int) -> None:
        if isinstance(source, Origin):
            self._origin.free(index)
        elif (state := self._peers.get(source)) is not None:
            state.inflight.discard(index)

    def _release(self, source: P | Origin, index: int) -> None:
        """Forget one request; the piece is pending again if it was its last source."""
        sources = self._inflight.get(index)
        if sources is None or sources.pop(source, None) is None:
            return
        self._free_slot(source, index)
        if not sources:
            del self._inflight[index]
            self._pool.add(index)
