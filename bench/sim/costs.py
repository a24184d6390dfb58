"""What a call of the real scheduler costs, against the number of linked peers.

A node knows ``peers`` peers, each holding a random quarter of a 1,024-piece blob, and
has filled every peer's request slots. Timed (CPU time, best of 3): a ``next_requests``
call that has nothing to assign (a ``Have`` arrived from a busy peer; the common case in
a crowd, and the floor of every call), and the same call once every request is past its
hedge deadline (the hedge path, taken when a node's downlink is shared by more requests
than the per-peer estimates assume).
"""

from __future__ import annotations

import random
import time

from peer.mesh.pieces import Bitfield, PiecePlan
from peer.mesh.scheduler import PieceScheduler, SchedulerConfig


def next_requests_cost(peers: int, *, late: bool = False, calls: int = 50, seed: int = 0) -> float:
    """Mean CPU seconds per ``next_requests`` call (see the module docstring)."""
    rng = random.Random(seed)
    plan = PiecePlan(1024 << 20, 1 << 20)
    sched: PieceScheduler[int] = PieceScheduler(plan, config=SchedulerConfig(seed=seed))
    for peer in range(peers):
        bits = Bitfield(plan.count)
        for index in rng.sample(range(plan.count), plan.count // 4):
            bits.set(index)
        sched.on_bitfield(peer, bits)
    now = 0.0
    sched.next_requests(now)  # fills every slot
    if late:
        now += 1000.0
    spent = 0.0
    for _ in range(calls):
        now += 0.001
        sched.on_have(rng.randrange(peers), rng.randrange(plan.count))
        t0 = time.process_time()
        sched.next_requests(now)
        spent += time.process_time() - t0
    return spent / calls


def table(counts: tuple[int, ...] = (10, 50, 200, 500)) -> list[tuple[int, float, float]]:
    """(peers, µs per idle call, µs per call with every request late) for each count."""
    return [
        (
            n,
            1e6 * min(next_requests_cost(n, seed=k) for k in range(3)),
            1e6 * min(next_requests_cost(n, late=True, calls=10, seed=k) for k in range(3)),
        )
        for n in counts
    ]


if __name__ == "__main__":
    for n, idle, late in table():
        print(f"{n:4d} peers: {idle:8.0f} µs per idle call, {late:8.0f} µs with every request late")
