"""Keep the tracker's piece hashes of what this node holds, across tracker restarts.

Theory of operation
-------------------
A peer takes a piece from us only if it matches the piece hash recorded at the tracker
(:mod:`peer.mesh.fetch`); a piece whose hash nobody recorded is never taken. Those records
are lost when a tracker with a memory store restarts, and never written for blobs this
node fetched while the tracker was unreachable. Either way what we hold stops flowing
through the mesh — for good, and exactly when it matters most if the origin is down too.
So this task records them again:

* when the tracker answers after failed announces (``Swarm.tracker_ok`` turns true again),
  it records the piece hashes of every multi-piece blob we hold, newest first;
* otherwise, every :data:`PROBE` seconds it asks for the record of one held blob (in turn)
  and, if the tracker lacks it (it restarted between two of our announces), records them
  all again.

The hashes come from our cached copy, in the same read that checks it against its digest
(:meth:`peer.mirror.scrub.Scrub.piece_hashes`): a copy that rotted on disk is deleted,
never vouched for. The tracker keeps the first hash recorded for a piece, so recording
again is harmless. One-piece blobs need no record: their piece hash is their digest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from peer.errors import TrackerError
from peer.mesh.pieces import PiecePlan

if TYPE_CHECKING:
    from peer.mesh.swarm import Swarm
    from peer.mirror.scrub import Scrub
    from peer.mirror.writer import CacheEntry

LOGGER = logging.getLogger(__name__)

#: Ask for one held blob's record this often: one small tracker query per node, the
#: tracker's default announce interval.
PROBE: Final = 30.0
#: How often to look at ``Swarm.tracker_ok`` (a local flag: free).
WATCH: Final = 0.5


def _multi_piece(swarm: Swarm) -> list[CacheEntry]:
    """Held blobs of more than one piece, newest first."""
    return [e for e in reversed(swarm.cache.entries()) if PiecePlan.for_size(e.size).count > 1]


async def republish_all(swarm: Swarm, scrub: Scrub) -> int:
    """Record the piece hashes of every multi-piece blob held; returns how many."""
    done = 0
    for entry in _multi_piece(swarm):
        plan = PiecePlan.for_size(entry.size)
        hashes = await scrub.piece_hashes(entry.digest, plan.piece_size)
        if hashes is None:
            continue
        try:
            await swarm.tracker.put_piece_hashes(
                entry.digest, size=plan.size, piece_size=plan.piece_size, hashes=hashes
            )
        except TrackerError as exc:
            LOGGER.info("stopped recording piece hashes: %s", exc)
            break
        done += 1
    return done


async def keep_hashes(swarm: Swarm, scrub: Scrub, *, probe_every: float = PROBE) -> None:
    """Run forever; see the module docstring."""
    was_ok = reached = swarm.tracker_ok
    next_probe = trio.current_time() + probe_every
    turn = 0
    while True:
        await trio.sleep(WATCH)
        ok, back = swarm.tracker_ok, swarm.tracker_ok and not was_ok and reached
        was_ok, reached = ok, reached or ok
        if not ok:
            continue
        if not back:
            if trio.current_time() < next_probe:
                continue
            held = _multi_piece(swarm)
            if not held:
                next_probe = trio.current_time() + probe_every
                continue
            probe = held[turn % len(held)]
            turn += 1
            try:
                record = await swarm.piece_hashes(probe.digest)
            except TrackerError:
                continue
            next_probe = trio.current_time() + probe_every
            if record is not None and all(record.hashes):
                continue
        count = await republish_all(swarm, scrub)
        LOGGER.info("recorded the piece hashes of %d held blobs at the tracker again", count)
        next_probe = trio.current_time() + probe_every
