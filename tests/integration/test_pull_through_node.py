"""Real runtimes pull through a real node from a real registry.

The node believes ``docker.io`` lives at the test registry (``--upstream docker.io=...``),
so runtimes pull ordinary ``docker.io/library/...`` references. Each runtime's fallback
is a dead address: a pull can only succeed through the node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.helpers.node import Node, running_node, spawn_node
from tests.helpers.registry import Registry
from tests.helpers.runtimes import (
    Containerd,
    Podman,
    Skopeo,
    write_hosts_toml,
    write_registries_conf,
)

pytestmark = pytest.mark.slow
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, so fallbacks fail


@pytest.fixture
async def node(registry: Registry, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(tmp_path / "node", upstreams={"docker.io": registry.url}) as n:
        yield n


def _shoal_fetches(registry: Registry, name: str) -> int:
    return sum(
        1
        for r in registry.requests()
        if r.path.startswith(f"/v2/{name}/") and "shoal" in r.user_agent
    )


@pytest.mark.parametrize("kind", ["oci", "docker", "index"])
async def test_containerd_pulls_through_node(
    registry: Registry, node: Node, containerd: Containerd, tmp_path: Path, kind: str
) -> None:
    name = registry.new_repo("library/ctr")
    push = {"oci": registry.push_oci_image, "docker": registry.push_docker_image,
            "index": registry.push_oci_index}[kind]  # fmt: skip
    image = push(name, "v1", layer_sizes=[200_000, 50_000])
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, "docker.io", node.url, server=DEAD)
    ref = f"docker.io/{name}:v1"
    result = await trio.to_thread.run_sync(containerd.pull, ref, hosts)
    assert result.returncode == 0, result.stderr
    assert containerd.image_digest(ref) == image.digest
    assert _shoal_fetches(registry, name) > 0
    # a second containerd pull (fresh store) is served from the node's cache
    before = len(registry.requests())
    await trio.to_thread.run_sync(containerd.ctr, "images", "rm", ref)
    await trio.to_thread.run_sync(containerd.ctr, "content", "prune", "references")
    again = await trio.to_thread.run_sync(containerd.pull, ref, hosts)
    assert again.returncode == 0, again.stderr
    blob_gets = [r for r in registry.requests()[before:] if "/blobs/" in r.path]
    assert blob_gets == []


async def test_skopeo_path_prefix(
    registry: Registry, node: Node, skopeo: Skopeo, tmp_path: Path
) -> None:
    """podman/CRI-O style: registries.conf mirror ``NODE/docker.io`` (path-prefix form)."""
    name = registry.new_repo("library/sko")
    image = registry.push_oci_image(name, "v1", layer_sizes=[100_000])
    conf = write_registries_conf(
        tmp_path / "registries.conf", "docker.io", f"{node.host}/docker.io", location="127.0.0.1:9"
    )
    dest = tmp_path / "out"
    result = await trio.to_thread.run_sync(
        lambda: skopeo.copy(f"docker.io/{name}:v1", dest, registries_conf=conf)
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "manifest.json").read_bytes() == image.manifest_bytes
    assert _shoal_fetches(registry, name) > 0


async def test_podman_pulls_through_node(
    registry: Registry, node: Node, podman: Podman, tmp_path: Path
) -> None:
    name = registry.new_repo("library/pod")
    image = registry.push_docker_image(name, "v1", layer_sizes=[100_000])
    conf = write_registries_conf(
        tmp_path / "registries.conf", "docker.io", f"{node.host}/docker.io", location="127.0.0.1:9"
    )
    result = await trio.to_thread.run_sync(lambda: podman.pull(f"docker.io/{name}:v1", conf))
    assert result.returncode == 0, result.stderr
    assert podman.image_digests()[f"docker.io/{name}:v1"] == image.digest


def test_containerd_pulls_through_shoal_peer_process(
    registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    """The README path: the ``shoal peer`` command, configured by flags, serves containerd."""
    name = registry.new_repo("library/cli")
    image = registry.push_oci_image(name, "v1", layer_sizes=[64_000])
    with spawn_node(tmp_path / "data", "--upstream", f"docker.io={registry.url}",
                    "--cache-size", "1GiB") as node:  # fmt: skip
        hosts = tmp_path / "hosts"
        write_hosts_toml(hosts, "docker.io", node.url, server=DEAD)
        result = containerd.pull(f"docker.io/{name}:v1", hosts)
        assert result.returncode == 0, result.stderr + node.log.read_text()
        assert containerd.image_digest(f"docker.io/{name}:v1") == image.digest
