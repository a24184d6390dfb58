"""What one blob's scheduler knows about each peer: pieces, requests, speed and penalties.

Sans-IO bookkeeping for :class:`~peer.mesh.scheduler.PieceScheduler`, ``now`` passed in.
A :class:`PeerBook` keeps one :class:`PeerState` per known, unbanned peer and the set of
banned ones. It keeps the blob's availability counts (the shared
:class:`~peer.mesh.pieces.RarityIndex`) in step with what peers announce, counting
unbanned peers only, and each peer's ``useful`` count (pieces it has that we lack), so a
peer with nothing for us is never asked.

A peer has ``per_peer`` request slots (one while it is marked slow); while fewer peers
can be asked than ``min_inflight / per_peer``, each gets ``ceil(min_inflight / peers)``,
so that a node with one or two peers still keeps a few requests in flight
(:meth:`PeerBook.free`).
"""

from __future__ import annotations

import math
from collections.abc import Container, Hashable, ValuesView
from typing import Generic, TypeVar

from peer.mesh.pieces import Bitfield, RarityIndex

P = TypeVar("P", bound=Hashable)


class PeerState:
    """One peer, as far as one blob's scheduler is concerned."""

    __slots__ = ("backoff_until", "inflight", "last_done", "pieces", "rate", "slow_until", "useful")

    def __init__(self) -> None:
        self.pieces: set[int] = set()
        self.inflight: set[int] = set()
        self.rate: float | None = None  # bytes/s, EWMA
        self.last_done = -math.inf
        self.backoff_until = -math.inf  # it said Busy
        self.slow_until = -math.inf  # it was late
        self.useful = 0  # pieces it has that we lack

    def measure(self, nbytes: int, issued: float, now: float, alpha: float) -> None:
        """Fold one finished request into the throughput EWMA (service time, not latency)."""
        elapsed = now - max(issued, self.last_done)
        if elapsed > 0:
            sample = nbytes / elapsed
            self.rate = sample if self.rate is None else alpha * sample + (1 - alpha) * self.rate
        self.last_done = now

    def penalise(self, now: float, penalty: float) -> None:
        """It was late: ask it last, one request at a time, for ``penalty`` seconds."""
        self.slow_until = now + penalty
        if self.rate is not None:
            self.rate /= 2


class PeerBook(Generic[P]):
    """The peers of one blob.

    Args:
        pool: The blob's pending pieces and their availability (shared with the scheduler).
        have: The pieces verified locally (shared with the scheduler, updated in place).
    """

    def __init__(self, pool: RarityIndex, have: Bitfield) -> None:
        self._pool = pool
        self._have = have
        self._peers: dict[P, PeerState] = {}
        self._banned: set[P] = set()

    def get(self, peer: P) -> PeerState | None:
        return self._peers.get(peer)

    def __getitem__(self, peer: P) -> PeerState:
        return self._peers[peer]

    def values(self) -> ValuesView[PeerState]:
        return self._peers.values()

    def is_banned(self, peer: P) -> bool:
        return peer in self._banned

    def on_bitfield(self, peer: P, bits: Bitfield) -> None:
        """``peer`` told us everything it has (replaces what we knew)."""
        if peer in self._banned:
            return
        if (state := self._peers.get(peer)) is not None:
            for index in state.pieces:
                self._pool.change(index, -1)
            state.pieces.clear()
            state.useful = 0
        for index in bits:
            self.on_have(peer, index)

    def on_have(self, peer: P, index: int) -> None:
        """``peer`` has piece ``index`` now (``index`` is in range)."""
        if peer in self._banned:
            return
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = PeerState()
        if index not in state.pieces:
            state.pieces.add(index)
            self._pool.change(index, +1)
            state.useful += index not in self._have

    def verified(self, index: int) -> None:
        """Piece ``index`` is ours now: it is no longer a reason to ask its holders."""
        for state in self._peers.values():
            if index in state.pieces:
                state.useful -= 1

    def remove(self, peer: P) -> None:
        """Forget a known ``peer`` and its pieces (its requests are released already)."""
        for index in self._peers[peer].pieces:
            self._pool.change(index, -1)
        del self._peers[peer]

    def ban(self, peer: P) -> None:
        """Never count or ask ``peer`` again for this blob."""
        self._banned.add(peer)

    def free(
        self, now: float, *, per_peer: int, min_inflight: int, initial_rate: float
    ) -> tuple[list[tuple[P, PeerState]], dict[P, int]]:
        """Peers that hold something we lack and may be asked now, fastest first, and how
        many more requests each may take."""
        free: list[tuple[P, PeerState]] = []
        slots: dict[P, int] = {}
        askable = [
            (peer, state)
            for peer, state in self._peers.items()
            if state.useful and now >= state.backoff_until
        ]
        if askable and min_inflight > per_peer * len(askable):  # few peers: pipeline
            per_peer = -(-min_inflight // len(askable))
        for peer, state in askable:
            cap = 1 if now < state.slow_until else per_peer
            if cap > len(state.inflight):
                free.append((peer, state))
                slots[peer] = cap - len(state.inflight)
        free.sort(key=lambda item: (now < item[1].slow_until, -(item[1].rate or initial_rate)))
        return free, slots

    def fast_holder(self, index: int, now: float) -> bool:
        """Some peer holds ``index`` and is neither slow nor backing off."""
        return any(
            index in s.pieces and now >= max(s.slow_until, s.backoff_until)
            for s in self._peers.values()
        )


def pick(
    index: int,
    free: list[tuple[P, PeerState]],
    slots: dict[P, int],
    busy: Container[object],
) -> P | None:
    """The first (fastest) free peer holding ``index`` that is not in ``busy``."""
    for peer, state in free:
        if slots[peer] > 0 and index in state.pieces and peer not in busy:
            return peer
    return None
