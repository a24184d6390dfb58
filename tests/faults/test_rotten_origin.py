"""An origin that serves bytes which do not match the digest asked for: no client gets the
whole wrong blob, on the streaming path (a node alone) or the mesh path (with a tracker),
and nothing is cached."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.helpers.mesh import running_tracker
from tests.helpers.node import running_node
from tests.helpers.registry import Registry

MiB = 1024 * 1024


def _rot(registry: Registry, digest: str) -> None:
    """Flip one byte in the middle of the registry's stored copy of ``digest``."""
    hexd = digest.split(":", 1)[1]
    data = registry.root / "storage/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


async def _pull(client: httpx.AsyncClient, path: str) -> tuple[int, int]:
    """(status, body bytes received); a body cut short ends the count, not the test."""
    status = got = 0
    try:
        async with client.stream("GET", path) as resp:
            status = resp.status_code
            async for chunk in resp.aiter_raw():
                got += len(chunk)
    except httpx.TransportError:
        pass  # cut short: what a client must see when the blob turned out wrong
    return status, got


@pytest.mark.parametrize("mesh", [False, True])
async def test_a_rotten_origin_blob_never_reaches_a_client_whole(
    registry: Registry, tmp_path: Path, mesh: bool
) -> None:
    name = registry.new_repo("library/rotten")
    data = hashlib.shake_256(b"rotten origin %d" % mesh).digest(6 * MiB + 12345)
    digest = registry.push_blob(name, data)
    _rot(registry, digest)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    async with running_tracker() as tracker:
        kw = {"tracker": tracker} if mesh else {}
        async with running_node(
            tmp_path / "n", upstreams={"docker.io": registry.url}, **kw
        ) as node:
            async with node.client() as client:
                # twice: the second time finds nothing cached and fails the same way
                for _ in range(2):
                    status, got = await _pull(client, path)
                    assert status != 200 or got < len(data), (status, got)
