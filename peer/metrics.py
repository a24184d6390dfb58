"""Prometheus metrics of one node, on a private registry (so tests can run several nodes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class NodeMetrics:
    """Every metric the node exports, named by Prometheus conventions."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "shoal_requests", "Registry requests answered", ["kind", "method", "status"], registry=r
        )
        self.bytes_served = Counter(
            "shoal_served_bytes",
            "Body bytes sent to clients, by where they came from (cache, upstream, peers)",
            ["source"],
            registry=r,
        )
        self.cache_hits = Counter("shoal_cache_hits", "Blob and manifest cache hits", registry=r)
        self.cache_misses = Counter("shoal_cache_misses", "Cache misses", registry=r)
        self.hit_ratio = Gauge("shoal_cache_hit_ratio", "hits / (hits + misses)", registry=r)
        self.upstream_errors = Counter(
            "shoal_upstream_errors", "Origin failures by kind", ["kind"], registry=r
        )
        self.upstream_bytes = Counter(
            "shoal_upstream_bytes", "Blob bytes fetched from the origin", registry=r
        )
        self.stale_tags = Counter(
            "shoal_stale_tags_served",
            "Tags answered from memory while the origin failed",
            registry=r,
        )
        self.cache_bytes = Gauge("shoal_cache_bytes", "Bytes held in the blob cache", registry=r)
        self.cache_entries = Gauge("shoal_cache_entries", "Blobs held in the cache", registry=r)
        self.cache_corrupt = Counter(
            "shoal_cache_corrupt_blobs",
            "Cached blobs found not to match their digest (deleted, fetched again)",
            registry=r,
        )
        self.downloads = Gauge("shoal_downloads_in_progress", "Blob downloads running", registry=r)
        self.ratelimit_remaining = Gauge(
            "shoal_upstream_ratelimit_remaining",
            "Last ratelimit-remaining header seen from an origin",
            ["registry"],
            registry=r,
        )
        self.p2p_bytes = Counter(
            "shoal_p2p_bytes", "Piece bytes exchanged with peers", ["direction"], registry=r
        )
        self.mesh_bytes = Counter(
            "shoal_mesh_download_bytes",
            "Bytes of mesh downloads by source (origin or peers)",
            ["source"],
            registry=r,
        )
        self.pieces_verified = Counter(
            "shoal_pieces_verified", "Pieces verified and written", registry=r
        )
        self.pieces_failed = Counter(
            "shoal_pieces_failed", "Pieces from peers that failed their hash", registry=r
        )
        self.peers_banned = Counter("shoal_peers_banned", "Peers banned for a blob", registry=r)
        self.swarm_links = Gauge("shoal_swarm_links", "Open links to other nodes", registry=r)
        self.swarm_downloads = Gauge(
            "shoal_swarm_downloads", "Mesh downloads in progress", registry=r
        )
        self._hits = 0
        self._misses = 0

    def hit(self) -> None:
        self._hits += 1
        self.cache_hits.inc()
        self.hit_ratio.set(self._hits / (self._hits + self._misses))

    def miss(self) -> None:
        self._misses += 1
        self.cache_misses.inc()
        self.hit_ratio.set(self._hits / (self._hits + self._misses))

    def render(self) -> bytes:
        return generate_latest(self.registry)
