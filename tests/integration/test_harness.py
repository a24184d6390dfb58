"""The real-parts harness proves itself: each client pulls from docker-registry directly.

If these fail, every shoal integration test built on the fixtures would fail for reasons
that have nothing to do with shoal, so they run first and say which part is broken.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import images, procs
from tests.helpers.registry import Registry
from tests.helpers.runtimes import (
    Containerd,
    Podman,
    Skopeo,
    write_hosts_toml,
    write_registries_conf,
)

# ---------------------------------------------------------------------------------------
# image builders (pure)


def test_layers_are_deterministic_gzip_tars_with_matching_diff_id() -> None:
    layer = images.make_layer(100_000, "key-a")
    assert images.make_layer(100_000, "key-a") == layer
    assert images.make_layer(100_000, "key-b").digest != layer.digest
    tar_bytes = gzip.decompress(layer.blob)
    assert images.digest_of(tar_bytes) == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["shoal/key-a.bin"].size == 100_000
    # incompressible: the blob is the payload plus a little framing
    assert 100_000 < len(layer.blob) < 100_000 + 4096


def test_image_config_names_its_platform_and_layers() -> None:
    image = images.build_image(
        "library/x", "v1", [10, 20], ("linux", "arm64", "v8"), seed=3, oci=True
    )
    config = json.loads(image.blobs[image.config_digest])
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    diff_ids = [images.digest_of(gzip.decompress(image.blobs[d])) for d in image.layer_digests]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert image.digest == images.digest_of(image.manifest_bytes)
    again = images.build_image(
        "library/x", "v1", [10, 20], ("linux", "arm64", "v8"), seed=3, oci=True
    )
    assert again.digest == image.digest
    other = images.build_image(
        "library/x", "v1", [10, 20], ("linux", "arm64", "v8"), seed=4, oci=True
    )
    assert other.digest != image.digest


def test_docker_image_uses_schema2_media_types() -> None:
    image = images.build_image("library/x", "v1", [10], ("linux", "amd64"), seed=0, oci=False)
    manifest = image.manifest
    assert image.media_type == manifest["mediaType"] == images.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == images.DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [images.DOCKER_LAYER_GZIP]


# ---------------------------------------------------------------------------------------
# process machinery


def test_a_daemon_that_dies_fails_fast_quoting_its_log(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    proc = procs.start(["sh", "-c", "echo config is broken; exit 3"], log)
    try:
        with pytest.raises(procs.ProcessFailed, match=r"exited with 3(.|\n)*config is broken"):
            procs.wait_for(lambda: None, what="daemon", timeout=30, proc=proc, log_path=log)
    finally:
        procs.stop(proc)


def test_a_daemon_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    proc = procs.start(["sleep", "60"], log)
    try:
        with pytest.raises(procs.ProcessFailed, match="not ready after"):
            procs.wait_for(lambda: None, what="daemon", timeout=0.2, proc=proc, log_path=log)
    finally:
        procs.stop(proc, grace=5)
    assert proc.returncode is not None


def test_missing_binary_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_REQUIRE_BINARIES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        procs.require_binary("shoal-no-such-binary", "no-such-package")
    monkeypatch.setenv("SHOAL_REQUIRE_BINARIES", "1")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        procs.require_binary("shoal-no-such-binary", "no-such-package")


# ---------------------------------------------------------------------------------------
# docker-registry


def test_registry_serves_what_was_pushed(registry: Registry) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1", [1000, 2000])
    resp = registry.client.get(f"/v2/{name}/manifests/v1", headers={"Accept": images.OCI_MANIFEST})
    assert resp.status_code == 200
    assert resp.content == image.manifest_bytes
    assert resp.headers["Docker-Content-Digest"] == image.digest
    for digest, blob in image.blobs.items():
        assert registry.client.get(f"/v2/{name}/blobs/{digest}").content == blob
    assert registry.blob_gets(name, image.layer_digests[0]) == 1


def test_registry_index_children_are_pushed_by_digest(registry: Registry) -> None:
    name = registry.new_repo()
    index = registry.push_oci_index(name, "multi")
    assert [c.platform for c in index.children] == [("linux", "amd64"), ("linux", "arm64")]
    accept = {"Accept": f"{images.OCI_INDEX}, {images.OCI_MANIFEST}"}
    got = registry.client.get(f"/v2/{name}/manifests/multi", headers=accept)
    assert got.content == index.manifest_bytes
    for child in index.children:
        got = registry.client.get(f"/v2/{name}/manifests/{child.digest}", headers=accept)
        assert got.content == child.manifest_bytes


def test_fresh_registry_stops_on_exit(tmp_path: Path) -> None:
    procs.require_binary("docker-registry", "docker-registry")
    with Registry(tmp_path) as reg:
        url = reg.url
        assert httpx.get(f"{url}/v2/", timeout=5).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v2/", timeout=5)


# ---------------------------------------------------------------------------------------
# containerd


@pytest.mark.slow
def test_containerd_pulls_and_unpacks_directly(
    registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1", [1000, 3 << 20])
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, registry.host, registry.url)
    ref = image.ref(registry.host)

    result = containerd.pull(ref, hosts)

    assert result.returncode == 0, procs.describe(result)
    assert containerd.image_digest(ref) == image.digest
    with containerd.mounted(ref, tmp_path / "rootfs") as rootfs:
        sizes = sorted(p.stat().st_size for p in (rootfs / "shoal").iterdir())
    assert sizes == [1000, 3 << 20]


@pytest.mark.slow
def test_containerd_pulls_docker_image_through_mirror_config(
    registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    name = registry.new_repo()
    image = registry.push_docker_image(name, "v1", [5000])
    hosts = tmp_path / "hosts"
    # The docker-registry plays the mirror of docker.io; the fallback server is unreachable
    # (port 1 refuses), so success proves the mirror served it.
    write_hosts_toml(hosts, "docker.io", registry.url, server="http://127.0.0.1:1")
    ref = f"docker.io/{name}:v1"
    pushed = len(registry.requests())

    result = containerd.pull(ref, hosts)

    assert result.returncode == 0, procs.describe(result)
    assert containerd.image_digest(ref) == image.digest
    seen = registry.requests()[pushed:]
    assert {r.path for r in seen} >= {f"/v2/{name}/blobs/{d}" for d in image.blobs}
    assert all(r.query == "ns=docker.io" for r in seen)
    assert all(r.user_agent.startswith("containerd/") for r in seen)


@pytest.mark.slow
def test_containerd_pulls_all_platforms_of_an_index(
    registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    name = registry.new_repo()
    index = registry.push_oci_index(name, "v1")
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, "docker.io", registry.url, server="http://127.0.0.1:1")
    ref = f"docker.io/{name}:v1"

    result = containerd.pull(ref, hosts, "--all-platforms")

    assert result.returncode == 0, procs.describe(result)
    assert containerd.image_digest(ref) == index.digest
    for blob_digest in index.all_blobs():
        assert registry.blob_gets(name, blob_digest) == 1


@pytest.mark.slow
def test_containerd_pulls_a_big_layer(
    fresh_registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    image = fresh_registry.push_oci_image("library/big", "v1", [64 << 20])
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, fresh_registry.host, fresh_registry.url)
    ref = image.ref(fresh_registry.host)

    started = time.monotonic()
    result = containerd.pull(ref, hosts)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, procs.describe(result)
    assert containerd.image_digest(ref) == image.digest
    assert elapsed < 60


# ---------------------------------------------------------------------------------------
# skopeo


def _manifest_digest(directory: Path) -> str:
    return "sha256:" + hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()


@pytest.mark.slow
def test_skopeo_copies_directly(registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1", [1000, 1 << 20])
    dest = tmp_path / "copy"

    result = skopeo.copy(image.ref(registry.host), dest)

    assert result.returncode == 0, procs.describe(result)
    assert _manifest_digest(dest) == image.digest
    for digest, blob in image.blobs.items():
        assert (dest / digest.removeprefix("sha256:")).read_bytes() == blob
    inspected = skopeo.inspect(image.ref(registry.host))
    assert inspected.returncode == 0, procs.describe(inspected)
    assert json.loads(inspected.stdout)["Digest"] == image.digest


@pytest.mark.slow
def test_skopeo_copies_through_registries_conf_mirror(
    registry: Registry, skopeo: Skopeo, tmp_path: Path
) -> None:
    name = registry.new_repo()
    image = registry.push_docker_image(name, "v1", [1000])
    conf = write_registries_conf(
        tmp_path / "registries.conf", "docker.io", registry.host, location="127.0.0.1:1"
    )
    dest = tmp_path / "copy"

    result = skopeo.copy(f"docker.io/{name}:v1", dest, registries_conf=conf)

    assert result.returncode == 0, procs.describe(result)
    assert _manifest_digest(dest) == image.digest


# ---------------------------------------------------------------------------------------
# podman


@pytest.mark.slow
def test_podman_pulls_through_registries_conf_mirror(
    registry: Registry, podman: Podman, tmp_path: Path
) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1", [1000, 1 << 20])
    conf = write_registries_conf(
        tmp_path / "registries.conf", "docker.io", registry.host, location="127.0.0.1:1"
    )

    result = podman.pull(f"docker.io/{name}:v1", conf)

    assert result.returncode == 0, procs.describe(result)
    assert podman.image_digests()[f"docker.io/{name}:v1"] == image.digest
