"""BlobFetch's failure paths on virtual time, against a stand-in swarm.

A failed mesh download must raise the error itself, not an ExceptionGroup around it: the
registry endpoint maps ``UpstreamError`` to an OCI error, and anything else to a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from peer.errors import UpstreamNotFound, UpstreamUnavailable
from peer.mesh.fetch import BlobFetch
from peer.mesh.swarm import Swarm
from peer.mirror.cache import BlobCache
from peer.mirror.flight import Download
from peer.mirror.names import Target

DIGEST = "sha256:" + "ab" * 32
SIZE = 3 * 1024 * 1024


class _Swarm:
    """Only what the origin path of a fetch touches: no peers, a tracker that is away."""

    peer_id = "me"

    def __init__(self, origin: BaseException | None) -> None:
        self.origin = origin

    async def find_peers(self, digest: str, fetch: Any) -> None:
        return None

    async def lease(self, digest: str, index: int, ttl: float) -> None:
        return None  # no tracker: fetch it ourselves

    async def origin_range(self, target: Target, digest: str, first: int, last: int) -> bytes:
        if self.origin is not None:
            raise self.origin
        await trio.sleep_forever()  # an origin that never answers
        raise AssertionError


def _fetch(tmp_path: Path, swarm: _Swarm) -> BlobFetch:
    cache = BlobCache(tmp_path, max_bytes=1 << 30)
    cache.open()
    writer = cache.new_writer(DIGEST, expected_size=SIZE)
    download = Download(DIGEST)
    download.started(SIZE, writer.path)
    target = Target("docker.io", "library/x")
    return BlobFetch(cast(Swarm, swarm), target, DIGEST, SIZE, download, writer)


async def test_origin_refusal_is_raised_bare(tmp_path: Path) -> None:
    fetch = _fetch(tmp_path, _Swarm(UpstreamNotFound("no such blob")))
    with pytest.raises(UpstreamNotFound):
        await fetch.run(stall_timeout=30)


async def test_stall_is_raised_bare(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    fetch = _fetch(tmp_path, _Swarm(None))
    with pytest.raises(UpstreamUnavailable, match="no piece"):
        await fetch.run(stall_timeout=5)
