"""The mesh with real processes: ``shoal tracker`` and ``shoal peer`` subprocesses.

Process-level faults (SIGKILL) and a real containerd pulling through a node whose origin
is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import procs
from tests.helpers.images import digest_of
from tests.helpers.node import NodeProcess, spawn_node
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd, write_hosts_toml

pytestmark = pytest.mark.slow
DEAD = "http://127.0.0.1:9"


@contextlib.contextmanager
def tracker_process(tmp: Path) -> Iterator[str]:
    port = procs.free_port()
    log = tmp / "tracker.log"
    proc = procs.start(
        [sys.executable, "-m", "tracker", "--listen", f"127.0.0.1:{port}", "--no-mdns"], log
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        try:
            return True if httpx.get(f"{url}/healthz", timeout=1).status_code == 200 else None
        except httpx.TransportError:
            return None

    try:
        procs.wait_for(ready, what="shoal tracker", timeout=20, proc=proc, log_path=log)
        yield url
    finally:
        procs.stop(proc)


def _node(
    tmp: Path, name: str, tracker: str, upstream: str, *extra: str
) -> contextlib.AbstractContextManager[NodeProcess]:
    return spawn_node(
        tmp / name, "--tracker", tracker, "--upstream", f"docker.io={upstream}",
        "--p2p-listen", f"127.0.0.1:{procs.free_port()}", "--node-id", name, *extra,
    )  # fmt: skip


def _wait_peers(tracker: str, count: int) -> None:
    def ready() -> bool | None:
        body = httpx.get(f"{tracker}/admin/peers", timeout=2).json()
        return True if len(body["peers"]) >= count else None

    procs.wait_for(ready, what="announces", timeout=20)


def _wait_held(tracker: str, digest: str, count: int) -> None:
    def ready() -> bool | None:
        resp = httpx.get(f"{tracker}/admin/blobs/{digest}", timeout=2)
        if resp.status_code != 200:
            return None
        complete = [h for h in resp.json()["holders"] if h["complete"]]
        return True if len(complete) >= count else None

    procs.wait_for(ready, what=f"holders of {digest}", timeout=20)


def test_peer_killed_mid_transfer_does_not_stop_the_pull(
    registry: Registry, tmp_path: Path
) -> None:
    """B pulls a blob that A and C hold, at a limited rate; A is SIGKILLed half-way."""
    name = registry.new_repo("library/kill")
    data = hashlib.shake_256(b"kill").digest(24 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    with tracker_process(tmp_path) as tracker, \
            _node(tmp_path, "a", tracker, registry.url) as a, \
            _node(tmp_path, "c", tracker, registry.url) as c:  # fmt: skip
        _wait_peers(tracker, 2)
        assert digest_of(httpx.get(a.url + path, timeout=60).content) == digest
        _wait_held(tracker, digest, 1)
        assert digest_of(httpx.get(c.url + path, timeout=60).content) == digest
        _wait_held(tracker, digest, 2)
        # B cannot reach the origin and downloads at 8 MB/s: about 3 s for the blob
        with _node(tmp_path, "b", tracker, DEAD, "--download-rate", "8MB") as b:
            _wait_peers(tracker, 3)
            killer = threading.Timer(1.0, a.proc.send_signal, (signal.SIGKILL,))
            killer.start()
            started = time.monotonic()
            resp = httpx.get(b.url + path, timeout=120)
            killer.join()
            assert a.proc.wait(timeout=10) == -signal.SIGKILL
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
    with tracker_process(tmp_path) as tracker, \
            _node(tmp_path, "a", tracker, fresh_registry.url) as a, \
            _node(tmp_path, "b", tracker, fresh_registry.url) as b:  # fmt: skip
        _wait_peers(tracker, 2)
        hosts_a = tmp_path / "hosts-a"
        write_hosts_toml(hosts_a, "docker.io", a.url, server=DEAD)
        result = containerd.pull(ref, hosts_a)
        assert result.returncode == 0, result.stderr
        for digest in image.blobs:
            _wait_held(tracker, digest, 1)
        time.sleep(0.5)  # tag resolutions reach the tracker in the background
        fresh_registry.stop()
        containerd.ctr("images", "rm", ref)
        containerd.ctr("content", "prune", "references")
        hosts_b = tmp_path / "hosts-b"
        write_hosts_toml(hosts_b, "docker.io", b.url, server=DEAD)
        result = containerd.pull(ref, hosts_b)
        assert result.returncode == 0, result.stderr + b.log.read_text()[-3000:]
        assert containerd.image_digest(ref) == image.digest
