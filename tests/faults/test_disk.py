"""The cache at its limits: a quota smaller than the working set, and a disk that is full.

* Quota: pulls of three times the quota, four at a time, twice over: LRU eviction makes
  room and every pull completes; the cache never exceeds its quota and verifies 100 %.
* Full disk: the cache directory on an 8 MiB tmpfs, with a quota (1 GiB) far above it.
  The node must see the disk, not only its quota: evict to make room, and refuse with a
  clear OCI error (before a byte is sent) what cannot fit — never a truncated or corrupt
  blob, never a temp file left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.helpers.cluster import temp_files, verify_cache
from tests.helpers.ledger import Ledger
from tests.helpers.mesh import metric
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry

MiB = 1024 * 1024


def _blobs(seed: str, sizes: list[int]) -> list[bytes]:
    return [hashlib.shake_256(f"{seed} {i}".encode()).digest(size) for i, size in enumerate(sizes)]


async def _pull_all(
    node: Node, name: str, digests: list[str], ledger: Ledger, *, width: int
) -> None:
    """GET every digest, ``width`` at a time."""
    limit = trio.CapacityLimiter(width)

    async def one(client: httpx.AsyncClient, digest: str) -> None:
        async with limit:
            resp = await client.get(f"/v2/{name}/blobs/{digest}?ns=docker.io")
        ledger.check(resp, digest)

    async with node.client() as client, trio.open_nursery() as nursery:
        for digest in digests:
            nursery.start_soon(one, client, digest)


async def test_lru_eviction_keeps_pulls_working(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    quota = 8 * MiB
    name = registry.new_repo("library/quota")
    sizes = [700_000 + 25_000 * i for i in range(24)]  # 24 MiB in all: three quotas
    digests = [registry.push_blob(name, blob) for blob in _blobs("quota", sizes)]
    data = tmp_path / "n"
    async with running_node(data, upstreams={"docker.io": registry.url}, cache_size=quota) as node:
        for _ in range(2):
            await _pull_all(node, name, digests, ledger, width=4)
        async with node.client() as client:
            text = (await client.get("/metrics")).text
        assert metric(text, "shoal_cache_bytes") <= quota
    assert ledger.ok == 2 * len(digests)
    good, bad = verify_cache(data)
    assert bad == []
    assert 0 < good < len(digests)  # some were evicted
    files = [p for p in (data / "cache" / "blobs").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files if not p.name.endswith(".type")) <= quota
    ledger.notes["pulls"] = ledger.ok


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only); skips where mounting fails."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_full_disk_is_a_clear_error_not_corruption(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    name = registry.new_repo("library/disk")
    small = _blobs("disk", [3 * MiB, 3 * MiB, 3 * MiB])
    big = _blobs("disk big", [9 * MiB])[0]
    small_digests = [registry.push_blob(name, blob) for blob in small]
    big_digest = registry.push_blob(name, big)
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        data = disk / "n"
        async with running_node(
            data, upstreams={"docker.io": registry.url}, cache_size=1024**3
        ) as node, node.client() as client:  # fmt: skip

            async def pull(digest: str) -> httpx.Response:
                with trio.fail_after(10):
                    resp = await client.get(f"/v2/{name}/blobs/{digest}?ns=docker.io")
                ledger.check(resp, digest)
                return resp

            # someone else filled the disk and the cache holds nothing to evict: refused
            filler = disk / "filler"
            filler.write_bytes(b"\0" * (6 * MiB))
            refused = await pull(small_digests[0])
            assert refused.status_code == 503
            assert "disk is full" in refused.json()["errors"][0]["message"]
            filler.unlink()
            # 3 x 3 MiB on an 8 MiB disk: the third fits because the node evicts for it
            for digest in small_digests:
                assert (await pull(digest)).status_code == 200
            # larger than the whole disk: refused up front, with an OCI error
            big_resp = await pull(big_digest)
            assert big_resp.status_code == 503
            assert "disk is full" in big_resp.json()["errors"][0]["message"]
            # and what was evicted pulls again
            assert (await pull(small_digests[0])).status_code == 200
        assert temp_files(data) == []
        good, bad = verify_cache(data)
        assert bad == []
        assert good >= 1
    ledger.notes["clean_errors"] = ledger.clean_errors
