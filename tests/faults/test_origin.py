"""The origin registry stops: what any node holds still pulls, the rest fails fast.

Two nodes on a tracker; node A pulled an image while the origin was up, node B never did.
Then the origin goes away — its process is stopped (connections refused), or frozen with
SIGSTOP (connections accepted, never answered; with ``--origin-timeout 1s``).

* by digest and by tag, on A (its own cache and tag memory, served stale with a Warning)
  and on B (tags through the tracker's shared tag memory, blobs from A through the mesh);
* anything nobody holds answers an OCI error — 503 or 404 — within 2 s (refused), or
  within the origin timeout plus a second (frozen).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from tests.helpers.images import PushedImage
from tests.helpers.ledger import Ledger
from tests.helpers.mesh import mesh_nodes, running_tracker, wait_held
from tests.helpers.node import Node
from tests.helpers.registry import Registry

OCI = "application/vnd.oci.image.manifest.v1+json"
MISSING = "sha256:" + "0" * 64


async def _pull_image(node: Node, image: PushedImage, ledger: Ledger, *, tag: str = "v1") -> None:
    """What a runtime does: the manifest by tag, then every blob."""
    async with node.client() as client:
        resp = await client.get(
            f"/v2/{image.name}/manifests/{tag}?ns=docker.io", headers={"Accept": OCI}
        )
        ledger.check(resp, image.digest)
        for digest in image.blobs:
            ledger.check(await client.get(f"/v2/{image.name}/blobs/{digest}?ns=docker.io"), digest)


async def _fails_fast(node: Node, path: str, ledger: Ledger, *, within: float) -> int:
    async with node.client() as client:
        started = time.monotonic()
        with trio.fail_after(within + 5):
            resp = await client.get(path, headers={"Accept": OCI})
        took = time.monotonic() - started
    assert not ledger.check(resp, MISSING, elapsed=took)
    assert resp.status_code in (404, 503), resp.text
    assert took < within, f"{path}: {resp.status_code} after {took:.1f}s"
    return resp.status_code


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_origin_gone(
    fresh_registry: Registry, tmp_path: Path, ledger: Ledger, how: str
) -> None:
    image = fresh_registry.push_oci_image("library/gone", "v1", layer_sizes=[2_500_000, 3_000])
    fresh_registry.push_oci_image("library/gone", "other", layer_sizes=[1000])
    origin = {"docker.io": fresh_registry.url}
    timeout = 1.0
    async with running_tracker() as tracker, mesh_nodes(
        tmp_path, tracker, 2, upstreams=origin, tag_ttl=0.0, origin_timeout=timeout
    ) as (a, b):  # fmt: skip
        await _pull_image(a, image, ledger)
        for digest in image.blobs:
            await wait_held(tracker, digest)
        await trio.sleep(0.3)  # the tag resolution reaches the tracker in the background
        pid = fresh_registry._proc.pid if fresh_registry._proc else 0
        if how == "stopped":
            fresh_registry.stop()
        else:
            os.kill(pid, signal.SIGSTOP)
        try:
            # every node pulls what any node holds, by tag and by digest
            await _pull_image(a, image, ledger)
            await _pull_image(b, image, ledger)
            async with b.client() as client:
                resp = await client.get(
                    f"/v2/{image.name}/manifests/{image.digest}?ns=docker.io",
                    headers={"Accept": OCI},
                )
            ledger.check(resp, image.digest)
            # what nobody holds: an OCI error, fast
            within = 2.0 if how == "stopped" else timeout + 2.0
            name = image.name
            for node in (a, b):
                await _fails_fast(node, f"/v2/{name}/manifests/other?ns=docker.io", ledger,
                                  within=within)  # fmt: skip
                await _fails_fast(node, f"/v2/{name}/manifests/{MISSING}?ns=docker.io", ledger,
                                  within=within)  # fmt: skip
                await _fails_fast(node, f"/v2/{name}/blobs/{MISSING}?ns=docker.io", ledger,
                                  within=within)  # fmt: skip
        finally:
            if how == "frozen":
                os.kill(pid, signal.SIGCONT)
    ledger.notes["slowest_error_s"] = round(ledger.slowest_error, 2)
