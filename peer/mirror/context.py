"""What the request handlers share: the cache, the origin client, tag memory, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from peer.mesh.swarm import Swarm
from peer.metrics import NodeMetrics
from peer.mirror.access import AccessCheck
from peer.mirror.allows import AllowList
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Flights
from peer.mirror.names import Target
from peer.mirror.scrub import Scrub
from peer.mirror.tags import TagCache, TagEntry
from peer.mirror.upstream import Upstream


class BlobBody(Protocol):
    """An open blob body: bytes in order, read into the caller's buffers."""

    async def readinto(self, buffer: memoryview) -> int:
        """Fill some of ``buffer``; 0 once the body is complete. Raises if it breaks off."""
        ...


class BlobSource(Protocol):
    """Where a missing blob's bytes come from: the origin, or the P2P mesh in front of it."""

    def open_blob(
        self, target: Target, digest: str
    ) -> AbstractAsyncContextManager[tuple[int, BlobBody]]:
        """Yields ``(size, body)``: the size before any byte, then the body."""
        ...


class OriginSource:
    """Fetch whole blobs straight from the origin registry."""

    def __init__(self, upstream: Upstream, metrics: NodeMetrics) -> None:
        self.upstream = upstream
        self.metrics = metrics

    def open_blob(
        self, target: Target, digest: str
    ) -> AbstractAsyncContextManager[tuple[int, BlobBody]]:
        return self._open(target, digest)

    @asynccontextmanager
    async def _open(self, target: Target, digest: str) -> AsyncIterator[tuple[int, BlobBody]]:
        async with self.upstream.open_blob(target.registry, target.repository, digest) as resp:
            yield resp.size, _Counted(resp, self.metrics)


class _Counted:
    def __init__(self, body: BlobBody, metrics: NodeMetrics) -> None:
        self._body = body
        self._metrics = metrics

    async def readinto(self, buffer: memoryview) -> int:
        n = await self._body.readinto(buffer)
        self._metrics.upstream_bytes.inc(n)
        return n


# A remote tag memory (the tracker's), consulted when the origin cannot resolve a tag.
TagFallback = Callable[[Target, str, str], Awaitable[TagEntry | None]]


@dataclass
class NodeContext:
    cache: BlobCache
    upstream: Upstream
    tags: TagCache
    allows: AllowList
    metrics: NodeMetrics
    default_registry: str
    nursery: trio.Nursery
    source: BlobSource
    flights: Flights = field(default_factory=Flights)
    tag_fallback: TagFallback | None = None
    on_tag_resolved: Callable[[Target, str, str, TagEntry], None] | None = None
    mesh: Swarm | None = None
    # Private registries: who may read what (None: every registry is anonymous).
    access: AccessCheck | None = None
    # Verifies blobs loaded from disk before their first serve (None: trust the disk).
    scrub: Scrub | None = None
    # A mesh download with no new piece for this long fails (origin and peers all stalled).
    stall_timeout: float = 30.0
