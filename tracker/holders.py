"""The memory registry's rows, and the admin views read from them (pure).

One peer's state (:class:`PeerState`) and one blob's holder sets (:class:`BlobHolders`),
as :class:`tracker.registry.Registry` keeps them in its peer and blob tables, and the
``tracker.model`` views that the admin API and the status page list from those tables
(their Redis twin is ``tracker.redis_admin``). The registry writes the rows and keeps its
invariants; the functions here only read them, and take live rows (the registry sweeps
expired peers first).
"""

from __future__ import annotations

from tracker.model import BlobDetail, BlobView, HolderView, PeerView, TransferView


class PeerState:
    """Mutable state of one peer."""

    __slots__ = ("bytes_from_origin", "bytes_from_peers", "bytes_served", "draining", "held",
                 "host", "last_seen", "load", "partial", "peer_id", "port", "session",
                 "upload_slots")  # fmt: skip

    def __init__(self, peer_id: str, session: bytes) -> None:
        self.peer_id = peer_id
        self.session = session
        self.host = ""
        self.port = 0
        self.held: tuple[str, ...] = ()
        self.partial: dict[str, int] = {}
        self.upload_slots = 0
        self.load = 0
        self.bytes_served = 0
        self.bytes_from_origin = 0
        self.bytes_from_peers = 0
        self.last_seen = 0.0
        self.draining = False


class BlobHolders:
    """Holders of one blob. ``digest`` is the one shared string for the digest."""

    __slots__ = ("complete", "digest", "partial", "size")

    def __init__(self, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size
        self.complete: set[str] = set()
        self.partial: set[str] = set()


def peer_view(peer: PeerState, peer_ttl: float) -> PeerView:
    """How ``peer`` reads in the admin API (it expires ``peer_ttl`` after it was seen)."""
    return PeerView(
        peer_id=peer.peer_id,
        host=peer.host,
        port=peer.port,
        last_seen=peer.last_seen,
        expires_at=peer.last_seen + peer_ttl,
        held=len(peer.held),
        in_progress=len(peer.partial),
        upload_slots=peer.upload_slots,
        load=peer.load,
        bytes_served=peer.bytes_served,
        bytes_from_origin=peer.bytes_from_origin,
        bytes_from_peers=peer.bytes_from_peers,
        draining=peer.draining,
    )


def holder_view(peer: PeerState, blob: BlobHolders, complete: bool) -> HolderView:
    """How ``peer`` reads as a holder of ``blob`` (complete, or in progress)."""
    return HolderView(
        peer_id=peer.peer_id,
        host=peer.host,
        port=peer.port,
        complete=complete,
        bytes_held=blob.size if complete else peer.partial[blob.digest],
        last_seen=peer.last_seen,
        draining=peer.draining,
    )


def blob_views(blobs: dict[str, BlobHolders], offset: int, limit: int) -> list[BlobView]:
    """The blobs sorted by digest, one page."""
    digests = sorted(blobs)[offset : offset + limit]
    return [
        BlobView(digest=b.digest, size=b.size, holders=len(b.complete), in_progress=len(b.partial))
        for b in (blobs[d] for d in digests)
    ]


def blob_detail(blob: BlobHolders, peers: dict[str, PeerState]) -> BlobDetail:
    """One blob and its holders, complete ones first, each group sorted by peer id."""
    holders = [holder_view(peers[i], blob, True) for i in sorted(blob.complete)]
    holders += [holder_view(peers[i], blob, False) for i in sorted(blob.partial)]
    return BlobDetail(digest=blob.digest, size=blob.size, holders=tuple(holders))


def transfer_views(
    peers: dict[str, PeerState], blobs: dict[str, BlobHolders], limit: int
) -> list[TransferView]:
    """Downloads in progress, most recently announced peer first (``peers`` is ordered by
    last announce), at most ``limit``."""
    out: list[TransferView] = []
    for peer in reversed(peers.values()):
        for digest, held in peer.partial.items():
            if len(out) >= limit:
                return out
            size = blobs[digest].size
            out.append(
                TransferView(peer_id=peer.peer_id, digest=digest, size=size, bytes_held=held)
            )
    return out
