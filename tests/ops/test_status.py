"""``shoal status`` against a real node, registry and tracker process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from peer.ops.cli import FAILED, OK, UNAVAILABLE, USAGE, cmd_status
from peer.ops.client import NodeClient
from peer.ops.images import parse_reference
from peer.ops.sync import sync_images
from tests.helpers.node import Node
from tests.helpers.registry import Registry
from tests.ops.helpers import TrackerProcess, announce, spawn_tracker


async def _sync(node: Node, *refs: str) -> None:
    async with NodeClient(node.url) as client:
        results = await sync_images(client, [parse_reference(r) for r in refs], platforms=None)
    assert [r.state for r in results] == ["synced"] * len(refs), results


async def test_status_reports_moved_tag_missing_blob_and_transfer(
    registry: Registry,
    node: Node,
    tracker: TrackerProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    moved, partial, busy, whole = (registry.new_repo(f"library/st{k}") for k in "mpbw")
    moved_v1 = registry.push_oci_image(moved, "v1", layer_sizes=[10_000])
    partial_v1 = registry.push_oci_image(partial, "v1", layer_sizes=[10_000, 20_000])
    busy_v1 = registry.push_oci_image(busy, "v1", layer_sizes=[40_000])
    whole_v1 = registry.push_docker_image(whole, "v1", layer_sizes=[5_000])
    await _sync(node, *(f"{n}:v1" for n in (moved, partial, busy, whole)))
    moved_v2 = registry.push_oci_image(moved, "v1", layer_sizes=[10_000], seed=1)  # tag moves

    def sizes(image_blobs: dict[str, bytes]) -> list[tuple[str, int]]:
        return [(d, len(b)) for d, b in image_blobs.items()]

    missing_layer = partial_v1.layer_digests[1]
    busy_layer = busy_v1.layer_digests[0]
    busy_size = len(busy_v1.blobs[busy_layer])
    held = [
        *sizes(moved_v1.blobs),
        *((d, s) for d, s in sizes(partial_v1.blobs) if d != missing_layer),
        (busy_v1.config_digest, len(busy_v1.blobs[busy_v1.config_digest])),
        *sizes(whole_v1.blobs),
    ]
    await announce(tracker.url, "node-a", held=held,
                   in_progress=[(busy_layer, busy_size, busy_size // 4)])  # fmt: skip
    await announce(tracker.url, "node-b", port=5052, held=sizes(whole_v1.blobs))

    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{n}:v1\n" for n in (moved, partial, busy, whole)))
    argv = ["-f", str(listing), "--peer", node.url, "--tracker", tracker.url,
            "--upstream", f"docker.io={registry.url}", "--platform", "all", "--json"]  # fmt: skip
    rc = await trio.to_thread.run_sync(cmd_status, argv)
    report = json.loads(capsys.readouterr().out)
    assert rc == FAILED
    assert (report["synced"], report["total"], report["checked"]) == (1, 4, ["mesh"])
    images = {i["image"].split("/")[-1]: i for i in report["images"]}

    m = images[f"{moved.split('/')[-1]}:v1"]
    assert m["state"] == "tag moved, blobs missing"
    assert m["upstream_digest"] == moved_v2.digest
    assert m["tag_moved"] == [
        f"shoal sync gets {moved_v1.digest} from the node, upstream has {moved_v2.digest}"
    ]
    assert len(m["missing"]) == len(moved_v2.blobs)  # the new content is nowhere yet

    p = images[f"{partial.split('/')[-1]}:v1"]
    assert p["state"] == "blobs missing"
    assert p["missing"] == [f"layer {missing_layer}: not in the mesh"]

    b = images[f"{busy.split('/')[-1]}:v1"]
    assert b["state"] == "in progress"
    assert b["in_progress"] == [
        f"layer {busy_layer}: 25% on the best of 1 downloading peer(s), no whole copy in the mesh"
    ]

    w = images[f"{whole.split('/')[-1]}:v1"]
    assert (w["state"], w["synced"], w["blobs"]) == ("synced", True, 2)


async def test_status_plain_with_local_cache(
    registry: Registry, node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warm, cold = registry.new_repo("library/warm"), registry.new_repo("library/cold")
    registry.push_oci_index(warm, "v1", layer_sizes=[8_000])
    cold_v1 = registry.push_oci_image(cold, "v1", layer_sizes=[8_000])
    await _sync(node, f"{warm}:v1")
    listing = tmp_path / "images.txt"
    listing.write_text(f"{warm}:v1\n{cold}:v1\n")
    argv = ["-f", str(listing), "--peer", "none", "--data", str(node.config.data),
            "--upstream", f"docker.io={registry.url}", "--platform", "all"]  # fmt: skip
    rc = await trio.to_thread.run_sync(cmd_status, argv)
    out = capsys.readouterr().out.splitlines()
    assert rc == FAILED
    assert out[0] == f"synced docker.io/{warm}:v1"
    assert out[1] == f"BLOBS MISSING docker.io/{cold}:v1"
    assert out[2] == f"  - missing: config {cold_v1.config_digest}: not in the node"
    assert out[-1] == "status: 1 of 2 image(s) synced"


async def test_status_all_synced_exits_0(
    registry: Registry, node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = registry.new_repo("library/fine")
    registry.push_oci_image(name, "v1", layer_sizes=[4_000])
    await _sync(node, f"{name}:v1")
    allows = tmp_path / "allows.txt"
    allows.write_text(f"docker.io/{name}\ndocker.io/library/*\n")
    registry.push_oci_image(name, "latest", layer_sizes=[4_000])
    await _sync(node, f"{name}:latest")
    argv = ["--allows", str(allows), "--peer", node.url, "--data", str(node.config.data),
            "--upstream", f"docker.io={registry.url}"]  # fmt: skip
    assert await trio.to_thread.run_sync(cmd_status, argv) == OK
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"synced docker.io/{name}:latest",
                                         "status: 1 of 1 image(s) synced"]  # fmt: skip
    assert "1 wildcard rule(s) name no image and are not checked: docker.io/library/*" in (
        captured.err
    )


def test_status_unreachable_tracker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("alpine\n")
    argv = ["-f", str(listing), "--peer", "none", "--tracker", "http://127.0.0.1:9"]
    assert cmd_status(argv) == UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.startswith("shoal status: cannot connect to the tracker at http://127.0.0.1:9 (")
    assert len(err.splitlines()) == 1


def test_status_needs_a_list_or_a_tracker(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_status(["--peer", "none"]) == USAGE
    err = capsys.readouterr().err
    assert "give -f FILE or --allows FILE (images to check), or --tracker URL" in err
    assert cmd_status(["--tracker", "http://127.0.0.1:9", "--stuck-after", "soon"]) == USAGE
    assert "--stuck-after: not a duration: 'soon'" in capsys.readouterr().err


async def test_status_reports_a_stuck_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real tracker process; node-a's download stops moving while node-b's goes on."""
    new, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    a, b = os.urandom(16), os.urandom(16)
    with spawn_tracker(tmp_path / "tracker", "--announce-interval", "1s") as tracker:
        await announce(tracker.url, "node-a", session=a, in_progress=[(new, 4000, 1000)])
        await announce(tracker.url, "node-b", port=5061, session=b,
                       in_progress=[(new, 4000, 500), (other, 100, 10)])  # fmt: skip
        await trio.sleep(4.0)
        await announce(tracker.url, "node-a", session=a, in_progress=[(new, 4000, 1000)])
        await announce(tracker.url, "node-b", port=5061, session=b,
                       in_progress=[(new, 4000, 3000), (other, 100, 20)])  # fmt: skip
        argv = ["--tracker", tracker.url, "--stuck-after", "3s", "--json"]
        rc = await trio.to_thread.run_sync(cmd_status, argv)
        report = json.loads(capsys.readouterr().out)
        assert rc == FAILED
        assert (report["total"], report["stuck_after"]) == (0, 3.0)
        (stuck,) = report["stuck_transfers"]
        assert {k: stuck[k] for k in ("peer_id", "digest", "size", "bytes_held")} == {
            "peer_id": "node-a", "digest": new, "size": 4000, "bytes_held": 1000,
        }  # fmt: skip
        assert 4.0 <= stuck["stalled_for"] < 30

        plain = await trio.to_thread.run_sync(cmd_status, ["--tracker", tracker.url,
                                                           "--stuck-after", "3s"])  # fmt: skip
        lines = capsys.readouterr().out.splitlines()
        assert plain == FAILED
        assert lines[0].startswith(f"STUCK node-a: {new} at 25% (1000 of 4000 bytes), no progress")
        assert lines[-1] == "status: 0 of 0 image(s) synced, 1 download(s) stuck for 3s or more"

        # a longer threshold: nothing is stuck, and that is success
        rc = await trio.to_thread.run_sync(cmd_status, ["--tracker", tracker.url, "--json"])
        report = json.loads(capsys.readouterr().out)
        assert (rc, report["stuck_after"], report["stuck_transfers"]) == (OK, 90.0, [])
