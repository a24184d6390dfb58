"""Machinery for the operator-tool tests: a real tracker process and peers announcing to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peer.mesh.tracker_client import NodeState, TrackerClient
from tests.helpers import procs
from tracker import protocol as p


@dataclass(frozen=True)
class TrackerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def spawn_tracker(root: Path, *args: str) -> Iterator[TrackerProcess]:
    """``python -m tracker`` (what ``shoal tracker`` runs) on a free loopback port, no mDNS.

    ``args`` are more flags (``--traffic-interval 0.2s``, say).
    """
    port = procs.free_port()
    log = root / "tracker.log"
    root.mkdir(parents=True, exist_ok=True)
    proc = procs.start(
        [sys.executable, "-m", "tracker", "--listen", f"127.0.0.1:{port}", "--no-mdns", *args],
        log,
    )
    url = f"http://127.0.0.1:{port}"

    try:
        procs.wait_for(
            procs.http_ok(f"{url}/healthz"),
            timeout=20,
            what="shoal tracker",
            proc=proc,
            log_path=log,
        )
        yield TrackerProcess(url, proc, log)
    finally:
        procs.stop(proc)


async def announce(
    tracker_url: str,
    peer_id: str,
    *,
    port: int = 5051,
    held: Sequence[tuple[str, int]] = (),
    in_progress: Sequence[tuple[str, int, int]] = (),
    bytes_from_origin: int = 0,
    bytes_from_peers: int = 0,
    errors: Sequence[tuple[str, str]] = (),
    session: bytes | None = None,
) -> None:
    """Announce one peer's holdings, as a node's tracker client does.

    ``errors`` are ``(kind, message)`` pairs the peer reports, seen now; pass the same
    ``session`` to announce the same peer again (another one is a conflict, 409).
    """
    session = session or os.urandom(16)
    async with TrackerClient(tracker_url, peer_id=peer_id, session=session) as client:
        await client.announce(
            NodeState(
                host="127.0.0.1",
                port=port,
                held=tuple(p.BlobHeld(d, s) for d, s in held),
                in_progress=tuple(p.BlobInProgress(d, s, h) for d, s, h in in_progress),
                upload_slots=4,
                bytes_from_origin=bytes_from_origin,
                bytes_from_peers=bytes_from_peers,
                errors=tuple(p.NodeError(at=time.time(), kind=k, message=m) for k, m in errors),
            )
        )


async def put_tag(tracker_url: str, image: str, digest: str) -> None:
    """Share a resolution of ``docker.io/<image>`` (``repository:tag``), as a node does."""
    repository, _, tag = image.rpartition(":")
    record = p.TagRecord(
        registry="docker.io", repository=repository, tag=tag, accept="", digest=digest,
        media_type="application/vnd.oci.image.manifest.v1+json", size=512,
        resolved_at=time.time(),
    )  # fmt: skip
    async with TrackerClient(tracker_url, peer_id="tagger", session=os.urandom(16)) as client:
        await client.put_tag(record)
