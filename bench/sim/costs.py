"""What one call of the real scheduler costs, against the number of linked peers.

A node with ``peers`` linked peers, each holding a random half of a 256-piece blob, runs
the loop ``BlobFetch`` runs: ask ``next_requests``, then complete one outstanding request
(``on_piece_ok``) and hear one ``Have``, and ask again. ``late`` makes every request
overdue (the hedge path: requests older than their deadline, as when a node's downlink
is shared by many more links than the scheduler's per-peer estimate assumes).
"""

from __future__ import annotations

import random
import time

from peer.mesh.pieces import Bitfield, PiecePlan
from peer.mesh.scheduler import PieceScheduler, SchedulerConfig


def next_requests_cost(peers: int, *, late: bool = False, calls: int = 400, seed: int = 0) -> float:
    """Mean seconds per ``next_requests`` call in steady state."""
    rng = random.Random(seed)
    plan = PiecePlan(256 << 22, 1 << 22)
    sched: PieceScheduler[int] = PieceScheduler(plan, config=SchedulerConfig(seed=seed))
    for peer in range(peers):
        bits = Bitfield(plan.count)
        for index in rng.sample(range(plan.count), plan.count // 2):
            bits.set(index)
        sched.on_bitfield(peer, bits)
    now = 0.0
    outstanding: list[tuple[int, int]] = []
    spent = 0.0
    made = 0
    for _ in range(calls):
        made += 1
        now += 30.0 if late else 0.001
        t0 = time.perf_counter()
        out = sched.next_requests(now)
        spent += time.perf_counter() - t0
        outstanding += [(a.source, a.piece) for a in out if isinstance(a.source, int)]
        if outstanding and not late:
            source, index = outstanding.pop(0)
            sched.on_piece_ok(source, index, now)
        sched.on_have(rng.randrange(peers), rng.randrange(plan.count))
        if sched.missing < 32:
            break
    return spent / made


def table(counts: tuple[int, ...] = (10, 50, 200, 500)) -> list[tuple[int, float, float]]:
    """(peers, µs per call, µs per call when every request is late) for each count."""
    return [
        (n, 1e6 * next_requests_cost(n), 1e6 * next_requests_cost(n, late=True, calls=100))
        for n in counts
    ]


if __name__ == "__main__":
    for n, normal, late in table():
        print(f"{n:4d} peers: {normal:8.0f} µs/call, all late: {late:8.0f} µs/call")
