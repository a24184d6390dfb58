"""The files ``shoal config`` writes work with the real tools: containerd, skopeo, podman.

The node believes docker.io lives at the test registry. The generated files are used as
written, except for the fallback: by default it is the real registry
(``https://registry-1.docker.io``), which on a machine with internet access would let a
pull succeed without the node. So these tests pass ``--fallback docker.io=<dead address>``
(a real flag, for operators whose fallback is an internal registry), and
:func:`test_fallback_flag_changes_only_the_fallback` pins that nothing else changes.
"""

from __future__ import annotations

from pathlib import Path

import trio

from peer.ops.cli import OK, cmd_config
from tests.helpers.node import Node
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd, Podman, Skopeo

DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens


def _config(runtime: str, node: Node, out: Path, *extra: str) -> None:
    argv = [runtime, "--mirror", node.url, "--registries", "docker.io", "--out", str(out), *extra]
    assert cmd_config(argv) == OK


def _shoal_fetches(registry: Registry, name: str) -> int:
    return sum(
        1
        for r in registry.requests()
        if r.path.startswith(f"/v2/{name}/") and "shoal/" in r.user_agent
    )


def test_fallback_flag_changes_only_the_fallback(tmp_path: Path) -> None:
    for runtime, path in (("containerd", "docker.io/hosts.toml"), ("podman", "50-shoal.conf")):
        plain, dead = tmp_path / f"{runtime}-plain", tmp_path / f"{runtime}-dead"
        assert cmd_config([runtime, "--registries", "docker.io", "--out", str(plain)]) == OK
        assert cmd_config([runtime, "--registries", "docker.io", "--out", str(dead),
                           "--fallback", f"docker.io={DEAD_URL}"]) == OK  # fmt: skip
        a = (plain / path).read_text().splitlines()
        b = (dead / path).read_text().splitlines()
        changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert changed in (
            [('server = "https://registry-1.docker.io"', f'server = "{DEAD_URL}"')],
            [('location = "docker.io"', 'location = "127.0.0.1:9"')],
        )


async def test_containerd_pulls_with_generated_hosts_dir(
    registry: Registry, node: Node, containerd: Containerd, tmp_path: Path
) -> None:
    name = registry.new_repo("library/cfgctr")
    image = registry.push_oci_index(name, "v1", layer_sizes=[60_000])
    hosts = tmp_path / "certs.d"
    _config("containerd", node, hosts, "--fallback", f"docker.io={DEAD_URL}")
    ref = f"docker.io/{name}:v1"
    result = await trio.to_thread.run_sync(containerd.pull, ref, hosts)
    assert result.returncode == 0, result.stderr
    assert containerd.image_digest(ref) == image.digest
    assert _shoal_fetches(registry, name) > 0  # the node fetched it; containerd never did
    # the shared registry also serves other tests' direct pulls: look at this repo only
    mine = [r for r in registry.requests() if r.path.startswith(f"/v2/{name}/")]
    assert all("containerd" not in r.user_agent for r in mine)


async def test_skopeo_honours_generated_registries_conf(
    registry: Registry, node: Node, skopeo: Skopeo, tmp_path: Path
) -> None:
    name = registry.new_repo("library/cfgsko")
    image = registry.push_docker_image(name, "v1", layer_sizes=[40_000])
    _config("podman", node, tmp_path / "conf.d", "--fallback", f"docker.io={DEAD_URL}")
    conf = tmp_path / "conf.d" / "50-shoal.conf"
    dest = tmp_path / "out"
    result = await trio.to_thread.run_sync(
        lambda: skopeo.copy(f"docker.io/{name}:v1", dest, registries_conf=conf)
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "manifest.json").read_bytes() == image.manifest_bytes
    assert _shoal_fetches(registry, name) > 0


async def test_podman_pulls_with_generated_registries_conf(
    registry: Registry, node: Node, podman: Podman, tmp_path: Path
) -> None:
    name = registry.new_repo("library/cfgpod")
    image = registry.push_oci_image(name, "v1", layer_sizes=[30_000])
    _config("podman", node, tmp_path / "conf.d", "--fallback", f"docker.io={DEAD_URL}")
    conf = tmp_path / "conf.d" / "50-shoal.conf"
    result = await trio.to_thread.run_sync(lambda: podman.pull(f"docker.io/{name}:v1", conf))
    assert result.returncode == 0, result.stderr
    assert podman.image_digests()[f"docker.io/{name}:v1"] == image.digest
