"""The swarm's links: accepting and dialing peers, and routing what each link hears.

:class:`~peer.mesh.swarm.Swarm` inherits this (and, through it,
:class:`~peer.mesh.swarm_tracker.SwarmTracker`): one node, one object, but the link half
reads apart from the downloads. Every link (:class:`~peer.mesh.link.PeerLink`) carries
any number of blobs. Messages are routed by digest:

* ``Interested(d)`` — the peer wants ``d``: remember it (it gets our ``Have`` messages
  for ``d``) and answer with our ``Bitfield`` for ``d`` if we hold any of it — unless we
  are still downloading ``d`` ourselves and already have ``MAX_LINKS_IN_PER_BLOB`` peers
  for it: then ``Declined`` (a node holding the whole blob takes every asker);
* ``Declined(d)`` — the peer will not take us for ``d`` now: forget it for ``d`` and do
  not ask it again for ``retry_after`` seconds;
* ``Bitfield``/``Have`` — go to the running :class:`~peer.mesh.fetch.BlobFetch` of ``d``;
* ``Request`` — answered from :class:`~peer.mesh.local.LocalPieces` (the cache, or a
  download in flight: in-progress sharing), ``Busy`` when we do not hold the piece.

A download dials peers for its blob while it has fewer than ``MAX_LINKS_PER_BLOB`` of
them (links in either direction count; :mod:`peer.mesh.blobpeers` keeps who is on which
blob). A link that ends takes its peer off every blob and out of every download.

Wire protocol 1 peers (``PeerLink.their_handshake.version``) are never sent ``Declined``,
and cut blobs over 500 MiB into larger pieces (``pieces.piece_size_v1``): for such a blob
we neither send them ``Interested``/``Bitfield``/``Have`` nor take theirs.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Final

import trio

from peer.errors import RemoteProtocolError, TrackerError
from peer.mesh.blobpeers import DECLINED_RETRY, MAX_LINKS_PER_BLOB, BlobPeers
from peer.mesh.link import PeerLink
from peer.mesh.pieces import Bitfield, same_pieces
from peer.mesh.ratelimit import TokenBucket
from peer.mesh.swarm_tracker import SwarmTracker
from peer.mesh.wire.connection import PeerConnection
from peer.mesh.wire.messages import (
    PROTOCOL_VERSION,
    Declined,
    Handshake,
    Have,
    Interested,
    Message,
    Request,
    format_digest,
    parse_digest,
)
from peer.mesh.wire.messages import (
    Bitfield as BitfieldMsg,
)

if TYPE_CHECKING:
    from peer.mesh.fetch import BlobFetch
    from peer.mesh.fetch_origin import OriginFetch
    from peer.mesh.local import LocalPieces
    from peer.mesh.tls import MeshTLS
    from peer.mesh.tracker_client import TrackerClient
    from peer.metrics import NodeMetrics
    from peer.mirror.cache import BlobCache
    from tracker.auth import ClusterKeys

# The swarm's logger still: these lines were swarm.py's, and operators filter on it.
LOGGER = logging.getLogger("peer.mesh.swarm")

# Requests a peer may have outstanding with us (Kraken's pipeline limit is 3; pieces are
# small enough that a few more keep a fast link busy).
MAX_REQUESTS: Final = 8
DIAL_TIMEOUT: Final = 2.0
EVENT_BUFFER: Final = 256
# Handshake nonce: 256 random bits, the HMAC key size (twice wire.messages.MIN_NONCE).
NONCE: Final = 32


class SwarmLinks(SwarmTracker):
    """The links of a :class:`~peer.mesh.swarm.Swarm` (see the module docstring).

    ``fetches`` holds the downloads in flight by digest (``Swarm.fetch`` registers them):
    their links' events go to them. ``_nursery`` is set by ``Swarm.serve``; until then
    nothing is dialed.
    """

    def __init__(
        self,
        *,
        peer_id: str,
        cache: BlobCache,
        tracker: TrackerClient,
        metrics: NodeMetrics,
        local: LocalPieces,
        upload_rate: int | None,
        download_rate: int | None,
        keys: ClusterKeys | None,
        tls: MeshTLS | None,
    ) -> None:
        super().__init__(peer_id=peer_id, cache=cache, tracker=tracker, metrics=metrics)
        self.keys = keys  # cluster secret(s): links are authenticated when set
        self.tls = tls  # mutual TLS under every link when set
        self.local = local
        now = trio.current_time()
        self.upload = TokenBucket(upload_rate, now=now) if upload_rate else None
        self.download = TokenBucket(download_rate, now=now) if download_rate else None
        self.links: dict[str, PeerLink] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.blob_peers = BlobPeers()  # who is on which blob (see peer.mesh.blobpeers)
        self.fetches: dict[str, BlobFetch] = {}
        self._dialing: set[str] = set()
        self._nursery: trio.Nursery | None = None

    # -- one link --------------------------------------------------------------------------
    def hello(self) -> Handshake:
        """Our handshake for one new link, with a fresh nonce (its Auth challenge)."""
        return Handshake(
            peer_id=self.peer_id, max_requests=MAX_REQUESTS, nonce=secrets.token_bytes(NONCE)
        )

    async def _accept(self, stream: trio.abc.Stream) -> None:
        if self.tls is not None:
            try:
                with trio.fail_after(DIAL_TIMEOUT):
                    stream = await self.tls.accept(stream)
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                LOGGER.debug("TLS handshake of an incoming link failed: %r", exc)
                return
        await self._run_link(stream, None)

    async def _run_link(
        self,
        stream: trio.abc.Stream,
        expected: str | None,
        task_status: trio.TaskStatus[PeerLink | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        send, receive = trio.open_memory_channel[Message](EVENT_BUFFER)
        conn = PeerConnection(keys=self.keys, dialer=expected is not None)
        link = PeerLink(
            stream, self.hello(), events=send, serve=self._serve, conn=conn,
            upload=self.upload, download=self.download,
        )  # fmt: skip
        peer: str | None = None
        try:
            async with trio.open_nursery() as nursery:
                theirs = await nursery.start(link.run)
                peer = theirs.peer_id
                if expected is not None and peer != expected:
                    raise RemoteProtocolError(f"dialled {expected}, {peer} answered")
                if peer == self.peer_id:
                    raise RemoteProtocolError("connected to ourselves")
                self.links.setdefault(peer, link)
                self.metrics.swarm_links.set(len(self.links))
                task_status.started(link)
                await self._events(peer, link, receive)
        except* (
            RemoteProtocolError,
            trio.BrokenResourceError,
            trio.TooSlowError,
            OSError,
        ) as group:
            LOGGER.debug("link to %s ended: %r", peer or expected, group.exceptions[0])
        except* Exception:  # per-link boundary: a bug costs this link, never the node
            LOGGER.exception("link to %s failed", peer or expected)
        finally:
            if peer is not None and self.links.get(peer) is link:
                del self.links[peer]
                self.metrics.swarm_links.set(len(self.links))
                self.blob_peers.gone(peer)  # a new link starts from Interested
                for fetch in self.fetches.values():
                    fetch.on_peer_gone(peer)

    async def _events(
        self, peer: str, link: PeerLink, events: trio.MemoryReceiveChannel[Message]
    ) -> None:
        async with events:
            async for message in events:
                if isinstance(message, Interested):
                    self._on_interested(peer, link, format_digest(message.digest))
                elif isinstance(message, Declined):
                    now = trio.current_time()
                    digest = format_digest(message.digest)
                    self.blob_peers.declined(digest, peer, message.retry_after, now)
                elif isinstance(message, BitfieldMsg):
                    digest = format_digest(message.digest)
                    fetch = self.fetches.get(digest)
                    if (
                        fetch is not None
                        and message.size == fetch.plan.size
                        and message.piece_size == fetch.plan.piece_size
                    ):
                        try:
                            bits = Bitfield.from_bytes(message.have, fetch.plan.count)
                        except ValueError:
                            continue
                        fetch.on_bitfield(peer, bits)
                elif isinstance(message, Have):
                    fetch = self.fetches.get(format_digest(message.digest))
                    if fetch is not None and _same_pieces(link, fetch.plan.size):
                        fetch.on_have(peer, message.index)

    def _on_interested(self, peer: str, link: PeerLink, digest: str) -> None:
        """Take ``peer`` for ``digest`` (Bitfield, then our Haves), or decline it."""
        described = self.local.describe(digest)
        whole = described is not None and described[1].complete
        can_decline = _version(link) >= 2
        if self.blob_peers.take(digest, peer, self.links, whole=whole, can_decline=can_decline):
            self._send_bitfield(link, digest)
            fetch = self.fetches.get(digest)
            if fetch is not None:
                fetch.on_company()  # it will want our pieces' hashes
            return
        try:
            link.send_nowait(Declined(digest=parse_digest(digest), retry_after=DECLINED_RETRY))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _serve(self, request: Request) -> bytes | None:
        digest = format_digest(request.digest)
        data = self.local.read(digest, request.index, request.offset, request.length)
        if data is not None:
            self.metrics.p2p_bytes.labels("out").inc(len(data))
        return data

    # -- links -----------------------------------------------------------------------------
    def link(self, peer: str) -> PeerLink | None:
        return self.links.get(peer)

    def raw(self, digest: str) -> bytes:
        return parse_digest(digest)

    async def _dial(self, peer: str, host: str, port: int) -> PeerLink | None:
        if peer in self.links:
            return self.links[peer]
        if peer in self._dialing or self._nursery is None:
            return None
        self._dialing.add(peer)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if self.tls is not None:
                    stream = await self.tls.dial(stream)
            link: PeerLink | None = await self._nursery.start(self._run_link, stream, peer)
            return link
        except (
            OSError, trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError, RuntimeError,
        ) as exc:  # fmt: skip
            # RuntimeError: the link ended before its handshake (nursery.start's complaint)
            LOGGER.debug("cannot reach peer %s at %s:%d: %r", peer, host, port, exc)
            return None
        finally:
            self._dialing.discard(peer)

    def _send_bitfield(self, link: PeerLink, digest: str) -> None:
        described = self.local.describe(digest)
        if described is None:
            return
        plan, bits = described
        if not _same_pieces(link, plan.size):
            return
        message = BitfieldMsg(
            digest=parse_digest(digest), size=plan.size, piece_size=plan.piece_size,
            have=bits.to_bytes(),
        )  # fmt: skip
        try:
            link.send_nowait(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _interest(self, link: PeerLink, peer: str, digest: str, size: int) -> None:
        if not _same_pieces(link, size) or not self.blob_peers.add(digest, peer):
            return
        try:
            link.send_nowait(Interested(digest=parse_digest(digest)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self._send_bitfield(link, digest)

    async def find_peers(self, digest: str, fetch: BlobFetch) -> bool:
        """Look the blob up at the tracker and link to holders while we have too few;
        False if the lookup found nobody else (or failed).

        With a full set of peers for the blob there is nobody to dial: no lookup (in a
        1,000-node crowd that is most nodes most of the time, and a lookup a second each
        would be the tracker's largest load).
        """
        if self.blob_peers.count(digest, self.links) >= self.blob_peers.dial_cap:
            return True
        try:
            peers = await self.tracker.lookup(digest, limit=MAX_LINKS_PER_BLOB * 2)
        except TrackerError:
            return False
        for addr in peers:
            self.addresses[addr.peer_id] = (addr.host, addr.port)
        candidates = [a.peer_id for a in peers if a.peer_id != self.peer_id]
        dial = self.blob_peers.to_dial(digest, candidates, self.links, trio.current_time())
        await self._link_all(digest, dial, fetch.plan.size)
        return bool(candidates)

    def linked_for(self, digest: str) -> int:
        """Peers linked to us for ``digest`` (either direction)."""
        return self.blob_peers.count(digest, self.links)

    def want_link(self, peer: str, fetch: OriginFetch) -> None:
        """The lease holder of a piece we need: link to it if we have room for one more."""
        if (
            peer in self.addresses
            and self._nursery is not None
            and self.blob_peers.may_dial(fetch.digest, peer, self.links, trio.current_time())
        ):
            self._nursery.start_soon(self._link_all, fetch.digest, [peer], fetch.plan.size)

    async def _link_all(self, digest: str, peers: list[str], size: int) -> None:
        async def one(peer: str) -> None:
            link = self.links.get(peer)
            if link is None and peer in self.addresses:
                link = await self._dial(peer, *self.addresses[peer])
            if link is not None:
                self._interest(link, peer, digest, size)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                if peer != self.peer_id:
                    nursery.start_soon(one, peer)

    def broadcast_have(self, digest: str, index: int) -> None:
        message = Have(digest=parse_digest(digest), index=index)
        fetch = self.fetches.get(digest)
        size = None if fetch is None else fetch.plan.size
        for peer in self.blob_peers.peers(digest):
            link = self.links.get(peer)
            # a wire-1 peer only hears of blobs we know both versions cut alike
            if link is not None and (
                _version(link) >= 2 or (size is not None and _same_pieces(link, size))
            ):
                try:
                    link.send_nowait(message)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass


def _version(link: PeerLink) -> int:
    """The wire protocol version we speak with the peer of ``link``."""
    theirs = link.their_handshake
    return 1 if theirs is None else min(PROTOCOL_VERSION, theirs.version)


def _same_pieces(link: PeerLink, size: int) -> bool:
    """Whether the peer of ``link`` cuts a blob of ``size`` bytes into our pieces."""
    return same_pieces(_version(link), size)
