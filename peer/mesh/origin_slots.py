"""The origin registry as a source of one blob: its request slots, runs, pauses and refusals.

Sans-IO bookkeeping for :class:`~peer.mesh.scheduler.PieceScheduler`, ``now`` passed in.
The scheduler keeps the requests themselves (which piece is in flight from whom); an
:class:`OriginSlots` only answers "may the origin be asked for this piece now?":

* At most ``slots`` origin requests are in flight at once (:attr:`OriginSlots.busy`).
* A refused lease (another node holds that piece's lease) holds the piece back until its
  ``retry_after`` (:meth:`OriginSlots.refuse`). A refusal because the cluster already has
  as many origin fetches of the blob in flight as it allows pauses the origin for every
  piece (:meth:`OriginSlots.pause`); requests in flight stay.
* **Origin runs.** The shell may widen an origin request into a *run* of the following
  pieces (one HTTP range request, leased at once at the tracker): the run takes the one
  slot its first piece took (:meth:`OriginSlots.extend_run`) until its last piece is
  resolved (:meth:`OriginSlots.free`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable


class OriginSlots:
    """The origin's slots, runs, pause and per-piece hold-backs for one blob.

    Args:
        enabled: Whether the origin may be asked at all.
        slots: Origin requests in flight at once (a run counts once).
    """

    __slots__ = (
        "_enabled",
        "_not_before",
        "_paused_until",
        "_run_left",
        "_runs",
        "_seq",
        "_slots",
        "busy",
    )

    def __init__(self, *, enabled: bool, slots: int) -> None:
        self._enabled = enabled
        self._slots = slots
        self.busy = 0  # slots taken (a run takes one)
        self._paused_until = -math.inf
        self._not_before: dict[int, float] = {}  # piece -> no origin request before then
        self._runs: dict[int, int] = {}  # piece in flight in a run -> run id
        self._run_left: dict[int, int] = {}  # run id -> its pieces in flight
        self._seq = 0  # last run id

    def may_ask(self, index: int, now: float) -> bool:
        """A slot is free and nothing holds piece ``index`` back at ``now``."""
        return (
            self._enabled
            and self.busy < self._slots
            and now >= self._paused_until
            and self._not_before.get(index, -math.inf) <= now
        )

    def pick(self, candidates: Iterable[int], now: float) -> list[int]:
        """The first ``candidates`` the origin may be asked for now, one per free slot.

        ``candidates`` may be a live view: it is left alone while the origin is disabled or
        paused, and the caller takes the slots (:meth:`take`) after this returns.
        """
        picks: list[int] = []
        if not (self._enabled and now >= self._paused_until):
            return picks
        room = self._slots - self.busy
        for index in candidates:
            if len(picks) >= room:
                break
            if self._not_before.get(index, -math.inf) <= now:
                picks.append(index)
        return picks

    def take(self) -> None:
        """A piece went in flight from the origin in a slot of its own."""
        self.busy += 1

    def free(self, index: int) -> None:
        """The origin request of piece ``index`` is resolved: free its slot (or its run's,
        once the run's last piece is resolved)."""
        run = self._runs.pop(index, None)
        if run is not None:
            self._run_left[run] -= 1
            if self._run_left[run] > 0:
                return  # the run goes on in its slot
            del self._run_left[run]
        self.busy -= 1

    def in_run(self, index: int) -> bool:
        """Piece ``index`` is in flight as part of an origin run."""
        return index in self._runs

    def extend_run(self, first: int, pieces: Collection[int]) -> None:
        """``pieces`` went in flight in the origin request of ``first``, without slots."""
        run = self._runs.get(first)
        if run is None:  # a new run: the slot ``first`` took is now the run's
            self._seq += 1
            run = self._runs[first] = self._seq
            self._run_left[run] = 1
        for index in pieces:
            self._runs[index] = run
        self._run_left[run] += len(pieces)

    def refuse(self, index: int, now: float, retry_after: float) -> None:
        """The lease of piece ``index`` was refused: no origin request before the retry."""
        self._not_before[index] = now + retry_after

    def pause(self, now: float, retry_after: float) -> None:
        """Ask the origin for no piece before ``now + retry_after``."""
        self._paused_until = max(self._paused_until, now + retry_after)

    def verified(self, index: int) -> None:
        """Piece ``index`` is verified: forget its hold-back."""
        self._not_before.pop(index, None)
