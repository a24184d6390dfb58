"""The lookup of the Redis store: a sample of a blob's holders, ranked (blocking).

The Redis twin of :meth:`tracker.registry.Registry.lookup`: ``RedisStore.lookup`` runs
:func:`lookup` in a worker thread, and it costs two pipelines whatever the swarm size.
``r`` is a redis-py client with ``decode_responses=False``; its stubs type replies
loosely, hence ``Any``. Key layout: see ``tracker.redis_scripts``.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack

from tracker import protocol as p
from tracker.model import Policy, rank, tier_of
from tracker.redis_admin import Info, peer_rows
from tracker.registry import LOOKUP_SAMPLE


def lookup(
    r: Any, prefix: str, policy: Policy, rng: random.Random, q: p.Lookup, now: float
) -> p.LookupReply:
    """Rank live, not draining holders of ``q.digest`` (see ``tracker.model``); never the
    asker."""
    # Like Registry.lookup, examine at most LOOKUP_SAMPLE holders, drawn at random by
    # Redis itself (SRANDMEMBER / HRANDFIELD), so the cost does not grow with the swarm.
    pipe = r.pipeline(transaction=False)
    pipe.hget(prefix + "blobs", q.digest)
    pipe.srandmember(prefix + "c:" + q.digest, LOOKUP_SAMPLE)
    pipe.hrandfield(prefix + "i:" + q.digest, LOOKUP_SAMPLE, withvalues=True)
    size, complete, partial = pipe.execute()
    if size is None:
        return p.LookupReply(digest=q.digest, size=0)
    asker = q.peer_id.encode()
    held = {i: -1 for i in complete if i != asker}
    for i, v in zip(partial[::2], partial[1::2], strict=True):
        if i != asker and i not in held:
            held[i] = int(v)
    ids = list(held)
    rng.shuffle(ids)
    del ids[LOOKUP_SAMPLE:]
    if not ids:
        return p.LookupReply(digest=q.digest, size=int(size))
    infos, seens, drains = peer_rows(r, prefix, policy, ids)
    deadline = now - policy.peer_ttl
    candidates: list[tuple[int, p.PeerAddr]] = []
    for peer_id, raw, seen, drain in zip(ids, infos, seens, drains, strict=True):
        if raw is None or seen is None or seen <= deadline or drain is not None:
            continue
        info: Info = msgpack.unpackb(raw)
        complete_ = held[peer_id] < 0
        addr = p.PeerAddr(
            peer_id=peer_id.decode(),
            host=info[0],
            port=info[1],
            complete=complete_,
            bytes_held=int(size) if complete_ else held[peer_id],
            load=info[3],
            upload_slots=info[2],
        )
        tier = tier_of(complete=complete_, load=addr.load, upload_slots=addr.upload_slots)
        candidates.append((tier, addr))
    chosen = rank(candidates, limit=q.limit, rng=rng)
    return p.LookupReply(digest=q.digest, size=int(size), peers=tuple(chosen))
