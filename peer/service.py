"""``shoal peer`` as a trio service: open the cache, serve the endpoint, shut down cleanly."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from peer.config import PeerConfig
from peer.httpserver import serve_http
from peer.metrics import NodeMetrics
from peer.mirror.allows import AllowList
from peer.mirror.cache import BlobCache
from peer.mirror.context import NodeContext, OriginSource
from peer.mirror.endpoint import Mirror
from peer.mirror.tags import TagCache
from peer.mirror.upstream import Upstream

LOGGER = logging.getLogger(__name__)

# In-flight downloads get this long to finish after a shutdown request.
GRACE_PERIOD = 5.0


@dataclass(frozen=True, slots=True)
class Bound:
    """What a started node listens on (ports resolved when 0 was asked)."""

    http_port: int


async def serve(
    config: PeerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until ``shutdown_trigger`` returns (default: until cancelled)."""
    config.data.mkdir(parents=True, exist_ok=True)
    cache = BlobCache(config.data / "cache", max_bytes=config.cache_size)
    count = cache.open()
    LOGGER.info("cache %s: %d blobs, %d bytes", config.data, count, cache.used_bytes)
    metrics = NodeMetrics()
    metrics.cache_bytes.set(cache.used_bytes)
    metrics.cache_entries.set(count)
    upstream = Upstream(config.upstreams, read_timeout=config.origin_timeout)
    try:
        async with trio.open_nursery() as background:
            ctx = NodeContext(
                cache=cache,
                upstream=upstream,
                tags=TagCache(config.data / "tags.json", ttl=config.tag_ttl),
                allows=AllowList(config.allows),
                metrics=metrics,
                default_registry=config.default_registry,
                nursery=background,
                source=OriginSource(upstream, metrics),
            )
            mirror = Mirror(ctx)
            async with trio.open_nursery() as front:
                host, port = config.listen
                http_port = await front.start(serve_http, mirror.handle, host, port)
                LOGGER.info("registry endpoint on http://%s:%d", host, http_port)
                task_status.started(Bound(http_port=http_port))
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                front.cancel_scope.cancel()
            background.cancel_scope.deadline = trio.current_time() + GRACE_PERIOD
    finally:
        with trio.move_on_after(2, shield=True):
            await upstream.aclose()
