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


class BlobSource(Protocol):
    """Where a missing blob's bytes come from: the origin, or the P2P mesh in front of it."""

    def open_blob(
        self, target: Target, digest: str
    ) -> AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]:
        """Yields ``(size, chunks)``: the size before any byte, then the bytes in order."""
        ...


class OriginSource:
    """Fetch whole blobs straight from the origin registry."""

    def __init__(self, upstream: Upstream, metrics: NodeMetrics) -> None:
        self.upstream = upstream
        self.metrics = metrics

    def open_blob(
        self, target: Target, digest: str
    ) -> AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]:
        return self._open(target, digest)

    @asynccontextmanager
    async def _open(
        self, target: Target, digest: str
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        async with self.upstream.open_blob(target.registry, target.repository, digest) as resp:
            yield resp.size, self._count(resp.chunks())

    async def _count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.metrics.upstream_bytes.inc(len(chunk))
            yield chunk


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
