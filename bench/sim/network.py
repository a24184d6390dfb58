"""A fluid network on virtual time: FIFO channels sharing node capacities max-min fairly.

Every endpoint ``e`` has an upload capacity ``up[e]`` and a download capacity
``down[e]`` (bytes/s; ``inf`` for "no limit"). A *channel* carries transfers from one
endpoint to another in FIFO order, like one shoal peer link (one writer task per link
sends piece frames one after another) or one HTTP range request to the origin. Only the
head transfer of a channel moves; a channel with a non-empty queue is *active*.

Rates are the max-min fair allocation of the active channels over the two resources
each one crosses (its source's upload and its destination's download), the steady state
of TCP flows behind per-host token buckets (shoal meters every link with one upload and
one download bucket per node, ``peer/mesh/ratelimit.py``). The allocation changes only
when the set of active channels changes, so it is recomputed lazily, vectorised
(:func:`maxmin`).

Time advances in steps (:meth:`Network.advance`); a transfer that ends inside a step gets
its exact (interpolated) finishing time, and the rest of the step goes to the next
transfer queued on the same channel, so a pipelined link never idles between pieces.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["Network", "maxmin"]

_EPS = 1e-9


def maxmin(
    src: np.ndarray,
    dst: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    *,
    tol: float = 0.0,
    max_rounds: int = 200,
) -> tuple[np.ndarray, int]:
    """Max-min fair rates of flows ``src[f] -> dst[f]`` under per-endpoint capacities.

    Parallel bottleneck filling: each round, every resource whose equal share is no larger
    than the share of any other resource its flows cross is a bottleneck; its flows are
    frozen at that share and the capacity they use is removed. The smallest share is
    always a bottleneck, so every round freezes something. Exact (up to float rounding)
    with ``tol=0``; with ``tol > 0`` a resource also counts as a bottleneck when its share
    is within ``1 + tol`` of its flows' other shares, which cuts the rounds and leaves every
    rate within ``tol`` of its max-min value (never above a capacity: each frozen flow
    takes the smaller of its two current equal shares). After ``max_rounds`` the remaining
    flows get that same feasible minimum.

    Returns:
        The rates, and the number of rounds used.
    """
    n_flows = len(src)
    rate = np.zeros(n_flows)
    if n_flows == 0:
        return rate, 0
    cap_u = np.array(up, dtype=float)
    cap_d = np.array(down, dtype=float)
    n_end = len(cap_u)
    live = np.arange(n_flows)
    s, d = src, dst
    rounds = 0
    while live.size:
        rounds += 1
        nu = np.bincount(s, minlength=n_end)
        nd = np.bincount(d, minlength=n_end)
        with np.errstate(divide="ignore", invalid="ignore"):
            su = np.where(nu > 0, np.maximum(cap_u, 0.0) / np.maximum(nu, 1), np.inf)
            sd = np.where(nd > 0, np.maximum(cap_d, 0.0) / np.maximum(nd, 1), np.inf)
        fu = su[s]
        fd = sd[d]
        if rounds >= max_rounds:
            rate[live] = np.minimum(fu, fd)
            break
        other_u = np.full(n_end, np.inf)
        np.minimum.at(other_u, s, fd)
        other_d = np.full(n_end, np.inf)
        np.minimum.at(other_d, d, fu)
        neck_u = su <= other_u * (1 + tol + _EPS)
        neck_d = sd <= other_d * (1 + tol + _EPS)
        frozen = neck_u[s] | neck_d[d]
        r = np.minimum(fu, fd)[frozen]
        rate[live[frozen]] = r
        cap_u -= np.bincount(s[frozen], weights=r, minlength=n_end)
        cap_d -= np.bincount(d[frozen], weights=r, minlength=n_end)
        keep = ~frozen
        live, s, d = live[keep], s[keep], d[keep]
    return rate, rounds


class Network:
    """Channels between endpoints ``0 .. len(up) - 1``; see the module docstring.

    Args:
        up: Upload capacity per endpoint, bytes/s.
        down: Download capacity per endpoint, bytes/s (``inf``: unlimited).
        tol: Tolerance of the max-min allocation (see :func:`maxmin`).
    """

    def __init__(
        self, up: np.ndarray | list[float], down: np.ndarray | list[float], *, tol: float = 0.01
    ) -> None:
        self.tol = tol
        self.up = np.array(up, dtype=float)
        self.down = np.array(down, dtype=float)
        if self.up.shape != self.down.shape:
            raise ValueError("up and down need one entry per endpoint")
        if np.any(self.up <= 0) or np.any(self.down <= 0):
            raise ValueError("capacities must be positive")
        size = 1024
        self._src = np.zeros(size, dtype=np.int64)
        self._dst = np.zeros(size, dtype=np.int64)
        self._left = np.zeros(size)  # bytes left of each channel's head transfer
        self._rate = np.zeros(size)
        self._queues: list[deque[tuple[Any, int]] | None] = [None] * size
        self._free: list[int] = list(range(size - 1, -1, -1))
        self._active: set[int] = set()
        self._index = np.zeros(0, dtype=np.int64)  # sorted active channel ids
        self._stale = False
        self.sent = np.zeros(len(self.up))  # bytes sent per endpoint (partial transfers too)
        self.recomputes = 0
        self.rounds = 0

    # -- channels ------------------------------------------------------------------------
    def open(self, src: int, dst: int) -> int:
        """A new, empty channel ``src -> dst``."""
        if not self._free:
            self._grow()
        ch = self._free.pop()
        self._src[ch], self._dst[ch] = src, dst
        self._queues[ch] = deque()
        self._left[ch] = 0.0
        return ch

    def _grow(self) -> None:
        old = len(self._src)
        new = old * 2
        for name in ("_src", "_dst", "_left", "_rate"):
            arr = getattr(self, name)
            grown = np.zeros(new, dtype=arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        self._queues.extend([None] * old)
        self._free.extend(range(new - 1, old - 1, -1))

    def push(self, ch: int, item: Any, nbytes: int) -> None:
        """Queue a transfer of ``nbytes`` (> 0) on ``ch``."""
        queue = self._queues[ch]
        assert queue is not None, "push on a closed channel"
        queue.append((item, nbytes))
        if len(queue) == 1:
            self._left[ch] = nbytes
            self._active.add(ch)
            self._stale = True

    def cancel(self, ch: int, item: Any) -> float:
        """Drop ``item`` from ``ch``. Returns the bytes of it already sent (wasted)."""
        queue = self._queues[ch]
        if not queue:
            return 0.0
        if queue[0][0] is item:
            wasted = queue[0][1] - float(self._left[ch])
            queue.popleft()
            if queue:
                self._left[ch] = queue[0][1]
            else:
                self._active.discard(ch)
                self._stale = True
            return wasted
        for k, (other, _) in enumerate(queue):
            if other is item:
                del queue[k]
                break
        return 0.0

    def close(self, ch: int) -> tuple[list[Any], float]:
        """Close ``ch``. Returns its queued items and the bytes of its head already sent."""
        queue = self._queues[ch]
        assert queue is not None, "channel closed twice"
        wasted = queue[0][1] - float(self._left[ch]) if queue else 0.0
        items = [item for item, _ in queue]
        self._queues[ch] = None
        if ch in self._active:
            self._active.discard(ch)
            self._stale = True
        self._free.append(ch)
        return items, wasted

    def queued(self, ch: int) -> int:
        queue = self._queues[ch]
        return len(queue) if queue else 0

    @property
    def active(self) -> int:
        return len(self._active)

    def rate(self, ch: int) -> float:
        """Current rate of ``ch`` (after the last :meth:`advance`)."""
        self._refresh()
        return float(self._rate[ch]) if ch in self._active else 0.0

    # -- time ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self._stale:
            return
        self._stale = False
        self._index = np.fromiter(self._active, dtype=np.int64, count=len(self._active))
        self._index.sort()
        idx = self._index
        rates, rounds = maxmin(self._src[idx], self._dst[idx], self.up, self.down, tol=self.tol)
        self._rate[idx] = rates
        self.recomputes += 1
        self.rounds += rounds

    def advance(self, t0: float, t1: float) -> list[tuple[float, int, Any]]:
        """Move every active channel from ``t0`` to ``t1``.

        Returns:
            ``(finish_time, channel, item)`` of every transfer that ended, by time.
        """
        self._refresh()
        idx = self._index
        if idx.size == 0:
            return []
        dt = t1 - t0
        rate = self._rate[idx]
        left = self._left[idx]
        moved = rate * dt
        ends = moved >= left - 1e-6
        keep = ~ends
        self._left[idx[keep]] = left[keep] - moved[keep]
        np.add.at(self.sent, self._src[idx[keep]], moved[keep])
        done: list[tuple[float, int, Any]] = []
        if not ends.any():
            return done
        for ch, r, first_left in zip(
            idx[ends].tolist(), rate[ends].tolist(), left[ends].tolist(), strict=True
        ):
            queue = self._queues[ch]
            assert queue
            src = int(self._src[ch])
            t = t0 + first_left / r
            item, _ = queue.popleft()
            self.sent[src] += first_left
            done.append((t, ch, item))
            while queue:
                nbytes = queue[0][1]
                room = (t1 - t) * r
                if room + 1e-6 >= nbytes:
                    t += nbytes / r
                    self.sent[src] += nbytes
                    done.append((t, ch, queue.popleft()[0]))
                else:
                    self._left[ch] = nbytes - room
                    self.sent[src] += room
                    break
            if not queue:
                self._active.discard(ch)
                self._stale = True
        done.sort(key=lambda x: x[0])
        return done

    def horizon(self) -> float:
        """Seconds until the first active transfer ends at current rates (inf if none)."""
        self._refresh()
        idx = self._index
        if idx.size == 0:
            return float("inf")
        return float(np.min(self._left[idx] / self._rate[idx]))
