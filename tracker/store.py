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

import random
from typing import Protocol

from tracker import protocol as p
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

    async def announce(self, a: p.Announce, now: float) -> p.AnnounceReply:
        """See :meth:`Registry.announce`."""
        return self.registry.announce(a, now)

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
        """See :meth:`Registry.transfers`."""
        return self.registry.transfers(now, limit=limit)

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

    async def sweep(self, now: float) -> int:
        """See :meth:`Registry.sweep`."""
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
