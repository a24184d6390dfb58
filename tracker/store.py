"""Where the tracker keeps its state: the ``Store`` interface, the memory store, a factory.

The HTTP shell only talks to a :class:`Store`. Two implementations exist:

* :class:`MemoryStore` (the default, ``--store memory``) wraps the pure
  :class:`~tracker.registry.Registry`; its methods never block.
* :class:`~tracker.redis_store.RedisStore` (``--store redis://HOST:PORT/DB`` or
  ``unix:///path.sock``) keeps everything in Redis so that several tracker replicas behind
  one address serve the same view.

Both answer with the same ``tracker.protocol`` messages and ``tracker.model`` views, rank
lookups with ``tracker.model.rank`` and apply the same ``Policy``; time always comes in as
``now`` (Unix seconds) from the caller.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Protocol

from tracker import protocol as p
from tracker.activity import (
    PROGRESS_TTL_FACTOR,
    Activity,
    ErrorEvent,
    TrafficPoint,
    downloads,
    node_errors,
)
from tracker.errors import BadRequest
from tracker.model import BlobDetail, BlobView, PeerView, Policy, Stats, TransferView
from tracker.registry import Registry


class Store(Protocol):
    """The operations the HTTP shell needs; see ``Registry`` for each one's contract."""

    policy: Policy
    kind: str  # "memory" or "redis", for /healthz

    async def announce(self, a: p.Announce, now: float) -> p.AnnounceReply: ...
    async def leave(self, msg: p.Leave, now: float) -> None: ...
    async def lookup(self, q: p.Lookup, now: float) -> p.LookupReply: ...
    async def put_pieces(self, record: p.PieceHashes) -> p.PiecesPutReply: ...
    async def get_pieces(self, digest: str) -> p.PieceHashes | None: ...
    async def put_tag(self, record: p.TagRecord) -> bool: ...
    async def get_tag(self, q: p.TagQuery) -> p.TagRecord | None: ...
    async def lease(self, req: p.LeaseRequest, now: float) -> p.LeaseReply: ...
    async def peers(self, now: float, *, offset: int, limit: int) -> list[PeerView]: ...
    async def blobs(self, now: float, *, offset: int, limit: int) -> list[BlobView]: ...
    async def blob(self, digest: str, now: float) -> BlobDetail | None: ...
    async def transfers(self, now: float, *, limit: int) -> list[TransferView]: ...
    async def drain(self, peer_id: str, now: float) -> bool: ...
    async def ban(self, peer_id: str, now: float) -> None: ...
    async def forget(self, digest: str) -> bool: ...
    async def stats(self, now: float) -> Stats: ...
    async def note_errors(self, events: Sequence[ErrorEvent]) -> None: ...
    async def errors(self, *, limit: int) -> list[ErrorEvent]: ...
    async def sample_traffic(self, now: float, *, interval: float) -> bool: ...
    async def traffic(self) -> list[TrafficPoint]: ...
    async def recent_tags(self, *, limit: int) -> list[p.TagRecord]: ...
    async def details(self, digests: Sequence[str], now: float) -> dict[str, BlobDetail]: ...
    async def sweep(self, now: float) -> int: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


class MemoryStore:
    """The embedded store: a :class:`Registry` behind the async :class:`Store` interface.

    Args:
        policy: Timing and caps.
        rng: Randomness for lookup sampling.
    """

    def __init__(self, policy: Policy | None = None, *, rng: random.Random | None = None) -> None:
        self.registry = Registry(policy, rng=rng)
        self.policy = self.registry.policy
        self.kind = "memory"
        self.activity = Activity(progress_ttl=PROGRESS_TTL_FACTOR * self.policy.peer_ttl)

    async def announce(self, a: p.Announce, now: float) -> p.AnnounceReply:
        """See :meth:`Registry.announce`; also records progress and reported errors."""
        reply = self.registry.announce(a, now)
        self.activity.progress(a.peer_id, downloads(a), now)
        self.activity.note_errors(node_errors(a, now))
        return reply

    async def leave(self, msg: p.Leave, now: float) -> None:
        """See :meth:`Registry.leave`."""
        self.registry.leave(msg, now)

    async def lookup(self, q: p.Lookup, now: float) -> p.LookupReply:
        """See :meth:`Registry.lookup`."""
        return self.registry.lookup(q, now)

    async def put_pieces(self, record: p.PieceHashes) -> p.PiecesPutReply:
        """See :meth:`Records.put_pieces`."""
        return self.registry.records.put_pieces(record)

    async def get_pieces(self, digest: str) -> p.PieceHashes | None:
        """See :meth:`Records.get_pieces`."""
        return self.registry.records.get_pieces(digest)

    async def put_tag(self, record: p.TagRecord) -> bool:
        """See :meth:`Records.put_tag`."""
        return self.registry.records.put_tag(record)

    async def get_tag(self, q: p.TagQuery) -> p.TagRecord | None:
        """See :meth:`Records.get_tag`."""
        return self.registry.records.get_tag(q)

    async def lease(self, req: p.LeaseRequest, now: float) -> p.LeaseReply:
        """See :meth:`Registry.lease`."""
        return self.registry.lease(req, now)

    async def peers(self, now: float, *, offset: int, limit: int) -> list[PeerView]:
        """See :meth:`Registry.peers`."""
        return self.registry.peers(now, offset=offset, limit=limit)

    async def blobs(self, now: float, *, offset: int, limit: int) -> list[BlobView]:
        """See :meth:`Registry.blobs`."""
        return self.registry.blobs(now, offset=offset, limit=limit)

    async def blob(self, digest: str, now: float) -> BlobDetail | None:
        """See :meth:`Registry.blob`."""
        return self.registry.blob(digest, now)

    async def transfers(self, now: float, *, limit: int) -> list[TransferView]:
        """See :meth:`Registry.transfers`, with when each last made progress."""
        return [
            dataclasses.replace(
                t, last_progress=self.activity.last_progress(t.peer_id, t.digest, now)
            )
            for t in self.registry.transfers(now, limit=limit)
        ]

    async def drain(self, peer_id: str, now: float) -> bool:
        """See :meth:`Registry.drain`."""
        return self.registry.drain(peer_id, now)

    async def ban(self, peer_id: str, now: float) -> None:
        """See :meth:`Registry.ban`."""
        self.registry.ban(peer_id, now)

    async def forget(self, digest: str) -> bool:
        """See :meth:`Registry.forget`."""
        return self.registry.forget(digest)

    async def stats(self, now: float) -> Stats:
        """See :meth:`Registry.stats`."""
        return self.registry.stats(now)

    async def note_errors(self, events: Sequence[ErrorEvent]) -> None:
        """See :meth:`Activity.note_errors`."""
        self.activity.note_errors(events)

    async def errors(self, *, limit: int) -> list[ErrorEvent]:
        """See :meth:`Activity.errors`."""
        return self.activity.errors(limit)

    async def sample_traffic(self, now: float, *, interval: float) -> bool:
        """Store a traffic point of the live peers' summed counters (:meth:`Activity.sample`)."""
        stats = self.registry.stats(now)
        point = TrafficPoint(
            at=now,
            bytes_from_origin=stats.bytes_from_origin,
            bytes_from_peers=stats.bytes_from_peers,
        )
        return self.activity.sample(point, interval=interval)

    async def traffic(self) -> list[TrafficPoint]:
        """See :meth:`Activity.traffic`."""
        return self.activity.traffic()

    async def recent_tags(self, *, limit: int) -> list[p.TagRecord]:
        """See :meth:`Records.recent_tags`."""
        return self.registry.records.recent_tags(limit)

    async def details(self, digests: Sequence[str], now: float) -> dict[str, BlobDetail]:
        """:meth:`blob` of each of ``digests`` that some live peer holds, in one call."""
        found = {}
        for digest in digests:
            detail = self.registry.blob(digest, now)
            if detail is not None:
                found[digest] = detail
        return found

    async def sweep(self, now: float) -> int:
        """See :meth:`Registry.sweep`; expired progress entries go too."""
        self.activity.sweep(now)
        return self.registry.sweep(now)

    async def ping(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""


def open_store(url: str, policy: Policy | None = None) -> Store:
    """Build the store named by ``--store``.

    Args:
        url: ``memory``, ``redis://HOST:PORT/DB``, ``rediss://…`` or ``unix:///path.sock``.
        policy: Timing and caps.

    Returns:
        A store; Redis connects lazily on first use.

    Raises:
        BadRequest: The URL names no store we know.
    """
    if url == "memory":
        return MemoryStore(policy)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tracker.redis_store import RedisStore  # redis only when asked

        return RedisStore.from_url(url, policy)
    raise BadRequest(
        f"unknown store {url!r}: use 'memory', 'redis://HOST:PORT/DB' or 'unix:///PATH'"
    )
