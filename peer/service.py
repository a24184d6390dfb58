"""``shoal peer`` as a trio service: open the cache, serve the endpoint, shut down cleanly."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from peer.config import PeerConfig
from peer.httpserver import serve_http
from peer.mesh.node import (
    SharedTags,
    advertise_address,
    cluster_keys,
    follow_mdns,
    mesh_tls,
    node_id,
    tracker_client,
)
from peer.mesh.republish import keep_hashes
from peer.mesh.swarm import Swarm
from peer.metrics import NodeMetrics
from peer.mirror.access import AccessCheck
from peer.mirror.allows import AllowList
from peer.mirror.cache import BlobCache
from peer.mirror.context import NodeContext, OriginSource
from peer.mirror.endpoint import Mirror
from peer.mirror.scrub import Scrub
from peer.mirror.tags import TagCache
from peer.mirror.upstream import Upstream

LOGGER = logging.getLogger(__name__)

# In-flight downloads get this long to finish after a shutdown request.
GRACE_PERIOD = 5.0


@dataclass(frozen=True, slots=True)
class Bound:
    """What a started node listens on (ports resolved when 0 was asked)."""

    http_port: int
    p2p_port: int = 0


async def _start_mesh(
    config: PeerConfig, ctx: NodeContext, nursery: trio.Nursery, upstream: Upstream
) -> int:
    """Start the P2P side (links, announces, discovery); returns the bound P2P port."""
    peer_id = node_id(config)
    client = tracker_client(config, peer_id)
    swarm = Swarm(
        peer_id=peer_id, advertise=advertise_address(config), cache=ctx.cache,
        flights=ctx.flights, upstream=upstream, tracker=client, metrics=ctx.metrics,
        upload_rate=config.upload_rate, download_rate=config.download_rate,
        keys=cluster_keys(config), tls=mesh_tls(config),
    )  # fmt: skip
    if swarm.keys is None:
        LOGGER.warning("no --cluster-secret: any host that reaches the P2P port may link")
    ctx.mesh = swarm
    ctx.stall_timeout = max(10.0, config.origin_timeout)
    tags = SharedTags(swarm, ctx.nursery)
    ctx.tag_fallback = tags.lookup
    ctx.on_tag_resolved = tags.resolved
    host, port = config.p2p_listen
    bound: int = await nursery.start(swarm.serve, host, port)
    if ctx.scrub is not None:
        nursery.start_soon(keep_hashes, swarm, ctx.scrub)
    if config.tracker == "auto":
        nursery.start_soon(follow_mdns, client, swarm)
    LOGGER.info("node %s: P2P on %s:%d, tracker %s", peer_id, swarm.advertise, bound,
                config.tracker)  # fmt: skip
    return bound


def _access(config: PeerConfig, upstream: Upstream) -> AccessCheck | None:
    """The private-registry gate, when the node has credentials for any registry."""
    if not config.upstream_credentials:
        return None
    LOGGER.info("private registries (clients must prove access): %s",
                ", ".join(sorted(config.upstream_credentials)))  # fmt: skip
    return AccessCheck(upstream, config.upstream_credentials)


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
    upstream = Upstream(
        config.upstreams, credentials=config.upstream_credentials,
        read_timeout=config.origin_timeout,
    )  # fmt: skip
    try:
        async with trio.open_nursery() as background:
            scrub = Scrub(cache, metrics)
            ctx = NodeContext(
                cache=cache,
                upstream=upstream,
                tags=TagCache(config.data / "tags.json", ttl=config.tag_ttl),
                allows=AllowList(config.allows),
                metrics=metrics,
                default_registry=config.default_registry,
                nursery=background,
                source=OriginSource(upstream, metrics),
                access=_access(config, upstream),
                scrub=scrub,
            )
            background.start_soon(scrub.run)  # re-hash what open() found, in the background
            mirror = Mirror(ctx)
            async with trio.open_nursery() as front:
                p2p_port = 0
                if config.tracker != "none":
                    p2p_port = await _start_mesh(config, ctx, front, upstream)
                host, port = config.listen
                http_port = await front.start(serve_http, mirror.handle, host, port)
                LOGGER.info("registry endpoint on http://%s:%d", host, http_port)
                task_status.started(Bound(http_port=http_port, p2p_port=p2p_port))
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                front.cancel_scope.cancel()
            background.cancel_scope.deadline = trio.current_time() + GRACE_PERIOD
    finally:
        with trio.move_on_after(2, shield=True):
            await upstream.aclose()
