"""The mesh with real processes: ``shoal tracker`` and ``shoal peer`` subprocesses.

Process-level faults (SIGKILL) and a real containerd pulling through a node whose origin
is gone.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import cluster
from tests.helpers.cluster import DEAD, start_all, wait_held, wait_peers
from tests.helpers.images import digest_of
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd, write_hosts_toml

pytestmark = pytest.mark.slow


def test_peer_killed_mid_transfer_does_not_stop_the_pull(
    registry: Registry, tmp_path: Path
) -> None:
    """B pulls a blob that A and C hold, at a limited rate; A is SIGKILLed half-way."""
    name = registry.new_repo("library/kill")
    data = hashlib.shake_256(b"kill").digest(24 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    tracker = cluster.tracker(tmp_path)
    with start_all(tracker):
        a = cluster.peer(tmp_path, "a", tracker=tracker.url, upstream=registry.url)
        c = cluster.peer(tmp_path, "c", tracker=tracker.url, upstream=registry.url)
        # B cannot reach the origin and downloads at 8 MB/s: about 3 s for the blob
        b = cluster.peer(tmp_path, "b", tracker=tracker.url, extra=["--download-rate", "8MB"])
        with start_all(a, c, b):
            wait_peers(tracker.url, 3)
            assert digest_of(httpx.get(a.url + path, timeout=60).content) == digest
            wait_held(tracker.url, digest, 1)
            assert digest_of(httpx.get(c.url + path, timeout=60).content) == digest
            wait_held(tracker.url, digest, 2)
            killer = threading.Timer(1.0, a.kill)
            killer.start()
            started = time.monotonic()
            resp = httpx.get(b.url + path, timeout=120)
            killer.join()
            assert a.proc is not None
            assert a.proc.returncode == -signal.SIGKILL
            assert resp.status_code == 200
            assert digest_of(resp.content) == digest
            assert time.monotonic() - started > 1.0  # A really died mid-transfer
            metrics = httpx.get(b.url + "/metrics").text
            assert 'shoal_mesh_download_bytes_total{source="origin"} 0.0' in metrics


def test_containerd_pulls_from_peer_with_origin_stopped(
    fresh_registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    """Node A pulls an image; the origin stops; containerd on node B still pulls it."""
    name = "library/offline"
    image = fresh_registry.push_oci_image(name, "v1", layer_sizes=[3_000_000, 200_000])
    ref = f"docker.io/{name}:v1"
    tracker = cluster.tracker(tmp_path)
    a = cluster.peer(tmp_path, "a", tracker=tracker.url, upstream=fresh_registry.url)
    b = cluster.peer(tmp_path, "b", tracker=tracker.url, upstream=fresh_registry.url)
    with start_all(tracker), start_all(a, b):
        wait_peers(tracker.url, 2)
        hosts_a = tmp_path / "hosts-a"
        write_hosts_toml(hosts_a, "docker.io", a.url, server=DEAD)
        result = containerd.pull(ref, hosts_a)
        assert result.returncode == 0, result.stderr
        for digest in image.blobs:
            wait_held(tracker.url, digest, 1)
        time.sleep(0.5)  # tag resolutions reach the tracker in the background
        fresh_registry.stop()
        containerd.ctr("images", "rm", ref)
        containerd.ctr("content", "prune", "references")
        hosts_b = tmp_path / "hosts-b"
        write_hosts_toml(hosts_b, "docker.io", b.url, server=DEAD)
        result = containerd.pull(ref, hosts_b)
        assert result.returncode == 0, result.stderr + b.log.read_text()[-3000:]
        assert containerd.image_digest(ref) == image.digest
