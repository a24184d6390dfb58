"""A node whose cached bytes rotted on disk (flipped behind its back).

* To its peers it serves bad pieces: each is caught by its piece hash, the node is banned
  for that blob, and the pull completes from the other holder.
* To runtimes: a manifest is checked on every serve; a blob is checked once after a
  restart, before it is first served (peer.mirror.scrub), then deleted and fetched again.
  A blob that rots while the node runs is served until the node restarts (sendfile never
  reads the bytes; see docs/reliability.md).
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.helpers.images import digest_of
from tests.helpers.ledger import Ledger
from tests.helpers.mesh import metric, running_tracker, wait_announced, wait_held
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry

DEAD = "http://127.0.0.1:9"


def _rot(data_dir: Path, digest: str, *, every: int = 1024 * 1024) -> None:
    """Flip one byte in every ``every`` bytes of the cached copy of ``digest``."""
    cached = next((data_dir / "cache" / "blobs").rglob(digest.split(":")[1]))
    raw = bytearray(cached.read_bytes())
    for offset in range(0, len(raw), every):
        raw[offset] ^= 0xFF
    cached.write_bytes(bytes(raw))


async def _get(
    node: Node, path: str, ledger: Ledger, digest: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with node.client() as client:
        resp = await client.get(path, headers=headers)
    ledger.check(resp, digest)
    return resp


async def test_rotten_holder_is_banned_and_repairs_itself_on_restart(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    name = registry.new_repo("library/rot")
    data = hashlib.shake_256(b"rot").digest(4 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    origin = {"docker.io": registry.url}
    async with running_tracker() as tracker:

        def node(i: str, **kw: Any) -> AbstractAsyncContextManager[Node]:
            return running_node(tmp_path / i, tracker=tracker, node_id=i, **kw)

        # C serves slowly, so the scheduler has every reason to ask A first
        async with node("c", upstreams=origin, upload_rate=1_000_000) as c, node(
            "b", upstreams={"docker.io": DEAD}
        ) as b:  # fmt: skip
            async with node("a", upstreams=origin) as a:
                await wait_announced(tracker, 3)
                await _get(a, path, ledger, digest)
                await _get(c, path, ledger, digest)
                await wait_held(tracker, digest, 2)
                _rot(tmp_path / "a", digest)
                with trio.fail_after(30):
                    resp = await _get(b, path, ledger, digest)
                assert resp.content == data
                async with b.client() as client:
                    text = (await client.get("/metrics")).text
                assert metric(text, "shoal_peers_banned_total") == 1
                failed = metric(text, "shoal_pieces_failed_total")
                assert failed >= 1
                ledger.notes["bad_pieces_caught"] = failed
            # A restarts: the rotten copy is caught before its first serve, and replaced
            async with node("a", upstreams=origin) as a:
                again = await _get(a, path, ledger, digest)
                assert again.content == data
                async with a.client() as client:
                    text = (await client.get("/metrics")).text
                assert metric(text, "shoal_cache_corrupt_blobs_total") == 1


async def test_rotten_blobs_found_at_start_are_deleted_in_the_background(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    """Nobody asks for them: the background pass still finds and deletes them."""
    name = registry.new_repo("library/rot")
    blobs = [hashlib.shake_256(b"bg %d" % i).digest(300_000 + i) for i in range(8)]
    digests = [registry.push_blob(name, blob) for blob in blobs]
    origin = {"docker.io": registry.url}
    async with running_node(tmp_path / "n", upstreams=origin) as n:
        for digest in digests:
            await _get(n, f"/v2/{name}/blobs/{digest}?ns=docker.io", ledger, digest)
    for digest in digests[::3]:
        _rot(tmp_path / "n", digest, every=50_000)
    async with running_node(tmp_path / "n", upstreams=origin) as n, n.client() as client:
        with trio.fail_after(10):
            while True:
                text = (await client.get("/metrics")).text
                if metric(text, "shoal_cache_corrupt_blobs_total") == 3:
                    break
                await trio.sleep(0.05)
    blobs_dir = tmp_path / "n" / "cache" / "blobs"
    left = {p.name for p in blobs_dir.rglob("*") if p.is_file() and "." not in p.name}
    assert left == {d.split(":")[1] for i, d in enumerate(digests) if i % 3}


async def test_rotten_manifest_is_never_served(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    name = registry.new_repo("library/rot")
    image = registry.push_oci_image(name, "v1")
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    path = f"/v2/{name}/manifests/{image.digest}?ns=docker.io"
    async with running_node(tmp_path / "n", upstreams={"docker.io": registry.url}) as n:
        first = await _get(n, path, ledger, image.digest, headers=accept)
        assert digest_of(first.content) == image.digest
        _rot(tmp_path / "n", image.digest, every=7)
        again = await _get(n, path, ledger, image.digest, headers=accept)
        assert again.content == image.manifest_bytes
        async with n.client() as client:
            text = (await client.get("/metrics")).text
        assert metric(text, "shoal_cache_corrupt_blobs_total") == 1
