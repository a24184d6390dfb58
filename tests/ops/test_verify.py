"""``shoal verify`` against a real node and registry: verified, moved tag, corrupted cache."""

from __future__ import annotations

import hashlib
import json

import pytest
import trio

from peer.ops.cli import FAILED, OK, UNAVAILABLE, USAGE, cmd_verify
from tests.helpers.node import Node
from tests.helpers.registry import Registry


async def _verify(node: Node, registry: Registry, *args: str) -> int:
    argv = [*args, "--peer", node.url, "--upstream", f"docker.io={registry.url}"]
    return await trio.to_thread.run_sync(cmd_verify, argv)


async def test_verified_index(
    registry: Registry, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.new_repo("library/ver")
    index = registry.push_oci_index(name, "v1", layer_sizes=[80_000, 3_000])
    assert await _verify(node, registry, f"{name}:v1") == OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Image docker.io/{name}:v1 is verified."
    assert out[1] == f"Digest: {index.digest}"
    blobs = len(index.all_blobs())
    assert out[2].startswith(f"  3 manifest(s), {blobs} blob(s)")  # index + 2 platforms


async def test_tag_moved_upstream_is_named(
    registry: Registry, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.new_repo("library/moved")
    old = registry.push_oci_image(name, "v1", layer_sizes=[20_000, 5_000])
    assert await _verify(node, registry, f"docker.io/{name}:v1") == OK  # node caches v1 (ttl 1h)
    capsys.readouterr()
    new = registry.push_oci_image(name, "v1", layer_sizes=[20_000, 5_000], seed=1)
    assert new.digest != old.digest
    assert await _verify(node, registry, f"docker.io/{name}:v1", "--json") == FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is False
    (image,) = report["images"]
    assert image["digest"] == old.digest
    assert image["upstream_digest"] == new.digest
    differences = image["differences"]
    assert differences[0] == f"tag v1: the node serves {old.digest}, upstream has {new.digest}"
    assert any(d.startswith("config: node sha256:") for d in differences)
    assert any(d.startswith("layers differ: node has 2, upstream 2; only on the node:")
               for d in differences)  # fmt: skip


async def test_corrupted_blob_on_the_node_is_named(
    registry: Registry, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.new_repo("library/rot")
    image = registry.push_docker_image(name, "v1", layer_sizes=[30_000])
    assert await _verify(node, registry, f"{name}:v1") == OK
    capsys.readouterr()
    layer = image.layer_digests[0]
    path = node.config.data / "cache" / "blobs" / "sha256" / layer[7:9] / layer[7:]
    # peer.mirror.cache's documented layout; the commit (fsync, rename) may finish just
    # after the client got the last byte
    with trio.fail_after(10):
        while True:
            if path.is_file():
                break
            await trio.sleep(0.05)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # bit rot: same size, other bytes
    path.write_bytes(bytes(data))
    assert await _verify(node, registry, f"{name}:v1") == FAILED
    out = capsys.readouterr().out
    assert f"Image docker.io/{name}:v1 is NOT verified:" in out
    size = len(image.blobs[layer])
    assert (
        f"  - layer: blob {layer} of docker.io/{name}:v1 from the node: {size} bytes that "
        f"hash to sha256:{hashlib.sha256(data).hexdigest()}" in out
    )
    assert f"Digest: {image.digest}" in out  # the manifest itself still matches


async def test_missing_image_and_denied(
    registry: Registry, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.new_repo("library/none")
    assert await _verify(node, registry, f"{name}:v1") == FAILED
    out = capsys.readouterr().out
    assert f"  - upstream: docker.io/{name}:v1 does not exist at the origin" in out
    assert "  - node: " in out
    assert "404 MANIFEST_UNKNOWN" in out


def test_verify_unreachable_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_verify(["alpine", "--peer", "http://127.0.0.1:9"]) == UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.startswith("shoal verify: cannot connect to the node at http://127.0.0.1:9")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Alpine"], "repository 'Alpine' must be lowercase"),
        (["alpine", "--upstream", "docker.io"], "--upstream wants REGISTRY=http(s)://URL"),
        (["alpine", "--platform", "x"], "bad platform"),
    ],
)
def test_verify_bad_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_verify([*argv, "--peer", "http://127.0.0.1:9"]) == USAGE
    assert message in capsys.readouterr().err
