"""The node's P2P side: links to other nodes, the tracker, and mesh downloads.

Theory of operation
-------------------
One :class:`Swarm` per node. It listens on ``--p2p-listen`` and dials the peers the
tracker names; every link (:class:`~peer.mesh.link.PeerLink`) carries any number of
blobs, its messages routed by digest. That half (accepting, dialing, the per-link events,
who hears of which blob) is :class:`~peer.mesh.swarm_links.SwarmLinks`, which ``Swarm``
inherits.

A download (:meth:`Swarm.fetch`) learns the blob's size from its holders at the tracker,
else from the origin, runs a :class:`~peer.mesh.fetch.BlobFetch` registered in
``fetches`` (so that its links' events reach it), commits the blob to the cache and
records its pieces' hashes. It dials peers for its blob while it has fewer than
``MAX_LINKS_PER_BLOB`` of them (links in either direction count); its first lookup waits
for our own announce, so that a flash crowd finds each other at once. Its origin pieces
come through :meth:`Swarm.origin_pieces` (one range request per run, counted here).

The node announces itself to the tracker at start, whenever a download starts or ends
(so a flash crowd finds each other at once), and every interval; it backs off while the
tracker is down and keeps serving through the origin meanwhile. That half, with origin
leases and piece hashes, is :class:`~peer.mesh.swarm_tracker.SwarmTracker`, which
``SwarmLinks`` inherits.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from functools import partial

import trio

from peer.errors import TrackerError, UpstreamError, UpstreamUnavailable
from peer.mesh.blobpeers import MAX_LINKS_PER_BLOB as MAX_LINKS_PER_BLOB  # bench/sim reads it
from peer.mesh.fetch import BlobFetch
from peer.mesh.local import LocalPieces
from peer.mesh.origin import read_pieces
from peer.mesh.swarm_links import MAX_REQUESTS as MAX_REQUESTS  # bench/sim reads it
from peer.mesh.swarm_links import SwarmLinks
from peer.mesh.tls import MeshTLS
from peer.mesh.tracker_client import NodeState, TrackerClient
from peer.metrics import NodeMetrics
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Download, Flights
from peer.mirror.names import Target
from peer.mirror.upstream import Upstream
from tracker import protocol as p
from tracker.auth import ClusterKeys

LOGGER = logging.getLogger(__name__)


class Swarm(SwarmLinks):
    """See the module docstring. Start with ``await nursery.start(swarm.serve, host, port)``."""

    def __init__(
        self,
        *,
        peer_id: str,
        advertise: str,
        cache: BlobCache,
        flights: Flights,
        upstream: Upstream,
        tracker: TrackerClient,
        metrics: NodeMetrics,
        upload_rate: int | None = None,
        download_rate: int | None = None,
        keys: ClusterKeys | None = None,
        tls: MeshTLS | None = None,
    ) -> None:
        super().__init__(
            peer_id=peer_id, cache=cache, tracker=tracker, metrics=metrics,
            local=LocalPieces(cache, flights), upload_rate=upload_rate,
            download_rate=download_rate, keys=keys, tls=tls,
        )  # fmt: skip
        self.advertise = advertise
        self.port = 0
        self.flights = flights
        self.upstream = upstream
        self.bytes_from_origin = 0
        self.bytes_from_peers = 0

    # -- service ---------------------------------------------------------------------------
    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(partial(trio.serve_listeners, self._accept, listeners))
            nursery.start_soon(self._announce_loop)
            task_status.started(self.port)

    # -- tracker (announces, leases, piece hashes: peer.mesh.swarm_tracker) ----------------
    def state(self) -> NodeState:
        """What the next announce tells the tracker about us."""
        held = tuple(p.BlobHeld(e.digest, e.size) for e in self.cache.entries()[-p.MAX_HELD :])
        progress = []
        for download in self.flights.active()[: p.MAX_IN_PROGRESS]:
            if download.size is not None:
                progress.append(p.BlobInProgress(download.digest, download.size, download.written))
        return NodeState(
            host=self.advertise, port=self.port, held=held, in_progress=tuple(progress),
            upload_slots=MAX_REQUESTS, load=sum(len(f.peers) for f in self.fetches.values()),
            bytes_from_origin=self.bytes_from_origin, bytes_from_peers=self.bytes_from_peers,
            errors=self.incidents.pending(),
        )  # fmt: skip

    async def origin_pieces(
        self,
        target: Target,
        digest: str,
        spans: Sequence[tuple[int, int]],
        on_piece: Callable[[int, bytearray], bool],
    ) -> None:
        """One origin range request for consecutive piece ``spans`` (see
        :func:`peer.mesh.origin.read_pieces`); a failure is noted for the tracker's page."""
        counted = partial(self._count_origin, on_piece)
        try:
            await read_pieces(self.upstream, target, digest, spans, counted)
        except UpstreamError as exc:
            self.incidents.note(
                time.time(), "origin", f"{target.registry}/{target.repository}: bytes "
                f"{spans[0][0]}-{spans[-1][1] - 1} of {digest}: {exc}",
            )  # fmt: skip
            raise

    def _count_origin(
        self, on_piece: Callable[[int, bytearray], bool], k: int, data: bytearray
    ) -> bool:
        self.metrics.upstream_bytes.inc(len(data))
        self.bytes_from_origin += len(data)
        return on_piece(k, data)

    # -- mesh downloads --------------------------------------------------------------------
    async def blob_size(self, target: Target, digest: str, *, origin: bool = True) -> int:
        """The blob's size: from holders at the tracker, else from the origin (HEAD).

        Raises:
            UpstreamUnavailable: nobody holds it and ``origin`` is False.
        """
        try:
            reply = await self.tracker.lookup_reply(digest, limit=MAX_LINKS_PER_BLOB)
            if reply.peers and reply.size > 0:
                for addr in reply.peers:
                    self.addresses[addr.peer_id] = (addr.host, addr.port)
                return reply.size
        except TrackerError:
            pass
        if not origin:
            raise UpstreamUnavailable(f"origin unreachable and no peer holds {digest}")
        try:
            return await self.upstream.head_blob(target.registry, target.repository, digest)
        except UpstreamError as exc:
            self.incidents.note(
                time.time(), "origin",
                f"{target.registry}/{target.repository}: size of {digest}: {exc}",
            )  # fmt: skip
            raise

    async def fetch(self, target: Target, digest: str, download: Download, *,
                    stall_timeout: float) -> None:  # fmt: skip
        """Fill ``download`` with ``digest`` through the mesh and commit it to the cache."""
        size = await self.blob_size(target, digest)
        writer = self.cache.new_writer(digest, expected_size=size)
        committed = False
        fetch = BlobFetch(self, target, digest, size, download, writer)
        try:
            download.source = "peers"
            download.started(size, writer.path)
            self.fetches[digest] = fetch
            self.announce_soon()
            try:
                await fetch.run(stall_timeout=stall_timeout)
            finally:
                del self.fetches[digest]
            writer.commit("application/octet-stream")
            committed = True
        finally:
            if not committed:
                writer.abort()
            self.announce_soon()
        self.bytes_from_peers += fetch.from_peers
        self.metrics.mesh_bytes.labels("origin").inc(fetch.from_origin)
        self.metrics.mesh_bytes.labels("peers").inc(fetch.from_peers)
        LOGGER.info(
            "%s: %d bytes, %d from the origin, %d from %d peers",
            digest, size, fetch.from_origin, fetch.from_peers, len(fetch.peers),
        )  # fmt: skip
        if all(fetch.hashes):  # every piece verified: share the full hash list
            try:
                await self.tracker.put_piece_hashes(
                    digest, size=size, piece_size=fetch.plan.piece_size, hashes=fetch.hashes
                )
            except TrackerError:
                pass


def new_session() -> bytes:
    return secrets.token_bytes(16)
