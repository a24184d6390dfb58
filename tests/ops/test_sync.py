"""``shoal sync`` against a real node and registry: preheat, then a runtime pull needs no origin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from peer.ops.cli import FAILED, OK, UNAVAILABLE, USAGE, cmd_config, cmd_sync
from peer.ops.client import NodeClient
from peer.ops.images import ImageRef, parse_reference
from peer.ops.oci import Platform
from peer.ops.sync import ImageResult, sync_images
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd

DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, so fallbacks fail


class Recorder:
    """A SyncReporter that keeps everything it is told."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.progress: dict[str, int] = {}
        self.results: list[ImageResult] = []

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        self.totals[str(image)] = total

    def advance(self, image: ImageRef, nbytes: int) -> None:
        self.progress[str(image)] = self.progress.get(str(image), 0) + nbytes

    def finished(self, result: ImageResult) -> None:
        self.results.append(result)


def _blob_gets(registry: Registry, since: int) -> list[str]:
    return [
        r.path for r in registry.requests()[since:] if r.method == "GET" and "/blobs/" in r.path
    ]


async def test_sync_preheats_so_containerd_pull_needs_no_origin_blobs(
    registry: Registry,
    node: Node,
    containerd: Containerd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index_name = registry.new_repo("library/sync")
    index = registry.push_oci_index(index_name, "v1", layer_sizes=[300_000, 40_000])
    plain_name = registry.new_repo("team/sync")
    plain = registry.push_docker_image(plain_name, "v2", layer_sizes=[120_000])
    listing = tmp_path / "images.txt"
    listing.write_text(
        "# preheat for the rollout\n\n"
        f"{index_name.removeprefix('library/')}:v1   # Docker Hub short form\n"
        f"docker.io/{plain_name}:v2\n"
    )
    rc = await trio.to_thread.run_sync(
        cmd_sync, ["-f", str(listing), "--peer", node.url, "--platform", "all"]
    )
    out = capsys.readouterr().out
    assert rc == OK, out
    assert f"synced docker.io/{index_name}:v1 {index.digest}" in out
    assert f"synced docker.io/{plain_name}:v2 {plain.digest}" in out
    assert "sync: 2 synced, 0 denied, 0 failed" in out
    for image in (index, plain):
        for digest in image.all_blobs():
            assert registry.blob_gets(image.name, digest) == 1, digest

    # A runtime now pulls both through the node with `shoal config containerd` output;
    # the origin serves no blob.
    hosts = tmp_path / "certs.d"
    assert cmd_config(["containerd", "--mirror", node.url, "--registries", "docker.io",
                       "--fallback", f"docker.io={DEAD}", "--out", str(hosts)]) == OK  # fmt: skip
    before = len(registry.requests())
    for ref in (f"docker.io/{index_name}:v1", f"docker.io/{plain_name}:v2"):
        result = await trio.to_thread.run_sync(containerd.pull, ref, hosts)
        assert result.returncode == 0, result.stderr
    assert containerd.image_digest(f"docker.io/{index_name}:v1") == index.digest
    assert containerd.image_digest(f"docker.io/{plain_name}:v2") == plain.digest
    assert _blob_gets(registry, before) == []
    # containerd's Accept set differs from sync's, so the node checks each tag once with a
    # HEAD (cheap, and not counted by Docker Hub's pull limit); no GET reaches the origin
    later = registry.requests()[before:]
    assert {(r.method, "/manifests/" in r.path) for r in later} <= {("HEAD", True)}


async def test_sync_api_platforms_dedup_and_progress(registry: Registry, node: Node) -> None:
    name = registry.new_repo("library/plat")
    index = registry.push_oci_index(
        name, "v1", platforms=[("linux", "amd64"), ("linux", "arm64", "v8")], layer_sizes=[50_000]
    )
    amd64, arm64 = index.children
    # the same image listed twice, by tag and by digest: its blobs are fetched once
    images = [parse_reference(f"{name}:v1"), parse_reference(f"{name}@{index.digest}")]
    recorder = Recorder()
    async with NodeClient(node.url) as client:
        results = await sync_images(
            client, images, platforms=[Platform("linux", "arm64")], concurrency=2, reporter=recorder
        )
    assert [r.state for r in results] == ["synced", "synced"]
    assert [r.digest for r in results] == [index.digest, index.digest]
    assert results[0].manifests == 1
    assert results[0].blobs == len(arm64.blobs)
    assert results[0].size == sum(len(b) for b in arm64.blobs.values())
    assert sum(r.received for r in results) == results[0].size  # each blob once
    for digest in arm64.blobs:
        assert registry.blob_gets(name, digest) == 1
    for digest in set(amd64.blobs) - set(arm64.blobs):
        assert registry.blob_gets(name, digest) == 0  # the other platform stays cold
    # the bars end full: every planned byte was reported done, for both images
    assert recorder.progress == recorder.totals
    assert sorted(r.image.reference for r in recorder.results) == sorted(
        i.reference for i in images
    )


async def test_sync_reports_denied_and_failed_images(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = registry.new_repo("library/ok")
    registry.push_oci_image(good, "v1", layer_sizes=[10_000])
    allows = tmp_path / "allows.txt"
    allows.write_text("docker.io/library/*\n")
    listing = tmp_path / "images.txt"
    listing.write_text(f"{good}:v1\nother/thing:v1\n{good}:no-such-tag\n")
    async with running_node(
        tmp_path / "node", upstreams={"docker.io": registry.url}, allows=allows
    ) as node:
        rc = await trio.to_thread.run_sync(
            cmd_sync, ["-f", str(listing), "--peer", node.url, "--json"]
        )
    report = json.loads(capsys.readouterr().out)
    assert rc == FAILED  # the missing tag; the denied image alone would not fail the run
    states = {i["image"]: (i["state"], i["error"]) for i in report["images"]}
    assert states[f"docker.io/{good}:v1"] == ("synced", None)
    state, error = states["docker.io/other/thing:v1"]
    assert state == "denied"
    assert "docker.io/other/thing is denied by the node's allows.txt" in error
    state, error = states[f"docker.io/{good}:no-such-tag"]
    assert state == "failed"
    assert "404 MANIFEST_UNKNOWN" in error
    assert (report["synced"], report["denied"], report["failed"]) == (1, 1, 1)


async def test_sync_denied_only_is_not_fatal(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allows = tmp_path / "allows.txt"
    allows.write_text("docker.io/library/*\n")
    listing = tmp_path / "images.txt"
    listing.write_text("other/thing:v1\n")
    async with running_node(
        tmp_path / "node", upstreams={"docker.io": registry.url}, allows=allows
    ) as node:
        rc = await trio.to_thread.run_sync(cmd_sync, ["-f", str(listing), "--peer", node.url])
    out = capsys.readouterr().out
    assert rc == OK
    assert "DENIED docker.io/other/thing:v1: docker.io/other/thing is denied" in out


def test_sync_malformed_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("alpine\n\nAlpine:3\nbusybox:\n")
    assert cmd_sync(["-f", str(listing), "--peer", DEAD]) == USAGE
    err = capsys.readouterr().err
    assert f"{listing}:3: 'Alpine:3': repository 'Alpine' must be lowercase" in err
    assert f"{listing}:4: 'busybox:': bad tag" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-f", "{missing}"], "cannot read"),
        (["-f", "{list}", "--platform", "linux"], "bad platform 'linux'"),
        (["-f", "{list}", "--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_sync_bad_usage(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("alpine\n")
    paths = {"missing": tmp_path / "nope.txt", "list": listing}
    argv = [a.format(**paths) for a in argv]
    assert cmd_sync([*argv, "--peer", DEAD]) == USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_sync_unreachable_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("alpine\n")
    assert cmd_sync(["-f", str(listing), "--peer", "127.0.0.1:9"]) == UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.startswith("shoal sync: cannot connect to the node at http://127.0.0.1:9")
    assert len(err.splitlines()) == 1
