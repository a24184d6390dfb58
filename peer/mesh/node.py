"""Wiring the mesh into a node: identity, the tracker client, discovery, shared tags."""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import trio

from peer.config import PeerConfig
from peer.errors import TrackerError
from peer.mesh.discovery import TrackerFound, TrackerLost, browse_trackers
from peer.mesh.swarm import Swarm
from peer.mesh.tls import MeshTLS
from peer.mesh.tracker_client import TrackerClient
from peer.mirror.names import Target
from peer.mirror.tags import TagEntry
from tracker import protocol as p
from tracker.auth import ClusterKeys

LOGGER = logging.getLogger(__name__)

_PEER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def node_id(config: PeerConfig) -> str:
    """``--node-id``, or an id made once and kept in the data directory."""
    if config.node_id:
        if not _PEER_ID.fullmatch(config.node_id):
            raise ValueError(f"--node-id {config.node_id!r}: letters, digits, . _ - (64 max)")
        return config.node_id
    path = Path(config.data) / "node-id"
    try:
        existing = path.read_text().strip()
        if _PEER_ID.fullmatch(existing):
            return existing
    except OSError:
        pass
    new = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
    new = re.sub(r"[^A-Za-z0-9._-]", "-", new).lstrip("-._") or secrets.token_hex(6)
    path.write_text(new + "\n")
    return new


def node_session(config: PeerConfig) -> bytes:
    """The tracker session of this node, made once and kept in the data directory.

    The tracker ties a live peer id to its session, so a node that restarts after a crash
    (SIGKILL, OOM: no goodbye sent) must come back with the same one; a fresh session
    would be refused as a conflicting live peer until the old one expired (``peer-ttl``).
    """
    path = Path(config.data) / "session"
    try:
        existing = bytes.fromhex(path.read_text().strip())
        if 8 <= len(existing) <= 32:
            return existing
    except (OSError, ValueError):
        pass
    new = secrets.token_bytes(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(new.hex() + "\n")
    return new


def advertise_address(config: PeerConfig) -> str:
    """The address other nodes dial: ``--advertise-addr``, the listen host, or a guess."""
    if config.advertise_addr:
        return config.advertise_addr
    host = config.p2p_listen[0]
    if host not in ("0.0.0.0", "::", ""):
        return host
    target = urlsplit(config.tracker).hostname if "://" in config.tracker else None
    if target in (None, "localhost") or (target or "").startswith("127."):
        target = None  # a tracker on this machine says nothing about our LAN address
    try:  # the source address the kernel would use toward the tracker (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target or "10.255.255.255", 9))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"


def cluster_keys(config: PeerConfig) -> ClusterKeys | None:
    """The cluster secret(s) of ``--cluster-secret``, or None (links and tracker open)."""
    return ClusterKeys.parse(config.cluster_secret) if config.cluster_secret else None


def mesh_tls(config: PeerConfig) -> MeshTLS | None:
    """Mutual TLS for the P2P port (``--tls-cert/--tls-key/--tls-ca``), or None."""
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        return None
    return MeshTLS.load(config.tls_cert, config.tls_key, config.tls_ca)


def tracker_client(config: PeerConfig, peer_id: str) -> TrackerClient:
    url = config.tracker if "://" in config.tracker else ""
    return TrackerClient(
        url, peer_id=peer_id, session=node_session(config), keys=cluster_keys(config)
    )


async def follow_mdns(client: TrackerClient, swarm: Swarm) -> None:
    """``--tracker auto``: use whichever tracker mDNS shows, and follow it when it moves."""
    async with browse_trackers() as events:
        async for event in events:
            if isinstance(event, TrackerFound) and event.url != client.base_url:
                LOGGER.info("tracker found over mDNS: %s", event.url)
                client.base_url = event.url.rstrip("/")
                swarm.announce_soon()
            elif isinstance(event, TrackerLost) and event.url.rstrip("/") == client.base_url:
                LOGGER.info("tracker at %s went away", event.url)


class SharedTags:
    """Tag resolutions shared through the tracker (stale-if-error across the cluster)."""

    def __init__(self, swarm: Swarm, nursery: trio.Nursery) -> None:
        self.swarm = swarm
        self.nursery = nursery

    def resolved(self, target: Target, tag: str, accept: str, entry: TagEntry) -> None:
        record = p.TagRecord(
            registry=target.registry, repository=target.repository, tag=tag, accept=accept,
            digest=entry.digest, media_type=entry.media_type, size=entry.size,
            resolved_at=entry.resolved_at,
        )  # fmt: skip
        self.nursery.start_soon(self._put, record)

    async def _put(self, record: p.TagRecord) -> None:
        if not self.swarm.tracker_ok:
            return
        try:
            with trio.move_on_after(2):
                await self.swarm.tracker.put_tag(record)
        except TrackerError as exc:
            LOGGER.debug("could not share tag %s: %s", record.tag, exc)

    async def lookup(self, target: Target, tag: str, accept: str) -> TagEntry | None:
        try:
            with trio.move_on_after(2):
                record = await self.swarm.tracker.get_tag(
                    registry=target.registry, repository=target.repository, tag=tag, accept=accept
                )
                if record is not None and record.resolved_at <= time.time() + 60:
                    return TagEntry(
                        record.digest, record.media_type, record.size, record.resolved_at
                    )
        except TrackerError:
            pass
        return None
