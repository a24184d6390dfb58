"""SIGKILL, the fault a node gets from the OOM killer or a node drain with no grace.

Real ``shoal peer`` processes on loopback, a real tracker process, a real registry:

* a peer that is serving pieces dies mid-transfer, round after round (the victim alternates
  and comes back each time): the downloader finishes from the other holder;
* the node that is downloading dies mid-download and is restarted: nothing partial is ever
  served, its cache verifies 100 %, and the blob is fetched afresh on the next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import cluster, procs
from tests.helpers.background import in_thread
from tests.helpers.cluster import blob_path, start_all, verify_cache, wait_held, wait_peers
from tests.helpers.faultproxy import Faults, fault_proxy
from tests.helpers.ledger import Ledger
from tests.helpers.registry import Registry

pytestmark = pytest.mark.slow

ROUNDS = 3


def test_holder_killed_mid_transfer_round_after_round(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    """B (no origin, 8 MB/s) pulls from A and C; one of them is SIGKILLed each round."""
    tracker = cluster.tracker(tmp_path)
    a = cluster.peer(tmp_path, "a", tracker=tracker.url, upstream=registry.url)
    c = cluster.peer(tmp_path, "c", tracker=tracker.url, upstream=registry.url)
    b = cluster.peer(tmp_path, "b", tracker=tracker.url, extra=["--download-rate", "8MB"])
    http = cluster.http()
    with start_all(tracker), start_all(a, c, b):
        wait_peers(tracker.url, 3)
        for round_ in range(ROUNDS):
            name = registry.new_repo("library/kill")
            data = hashlib.shake_256(b"kill %d" % round_).digest(8 * 1024 * 1024)
            digest = registry.push_blob(name, data)
            path = blob_path(name, digest)
            for seed in (a, c):
                ledger.get(http, seed.url + path, digest, timeout=60)
            wait_held(tracker.url, digest, 2)
            victim = (a, c)[round_ % 2]
            killer = threading.Timer(0.4, victim.kill)
            killer.start()
            started = time.monotonic()
            assert ledger.get(http, b.url + path, digest, timeout=60).status_code == 200
            took = time.monotonic() - started
            killer.join()
            assert victim.proc is not None
            assert victim.proc.returncode == -signal.SIGKILL
            assert took > 0.4, "the victim died after the transfer, not during it"
            # the victim comes back on its old ports with its cache intact and verified
            assert victim.data is not None
            good, bad = verify_cache(victim.data)
            assert (good, bad) == (round_ + 1, [])
            victim.start().wait_ready()
            assert ledger.get(http, victim.url + path, digest).status_code == 200
            wait_peers(tracker.url, 3)
            wait_held(tracker.url, digest, 3)
        metrics = http.get(b.url + "/metrics").text
        assert 'shoal_mesh_download_bytes_total{source="origin"} 0.0' in metrics
    ledger.notes["rounds"] = ROUNDS


@pytest.mark.parametrize("mode", ["origin", "mesh"])
def test_downloader_killed_mid_download_then_restarted(
    registry: Registry, tmp_path: Path, ledger: Ledger, mode: str
) -> None:
    """A node dies while a blob streams in; after a restart nothing partial is served.

    ``origin``: a lone node streaming from a trickling origin (``--tracker none``).
    ``mesh``: a node filling pieces out of order from a peer at a limited rate.
    """
    name = registry.new_repo("library/restart")
    data = hashlib.shake_256(b"restart " + mode.encode()).digest(6 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    path = blob_path(name, digest)
    http = cluster.http()
    slow = Faults(rate=2_000_000)  # the origin link in "origin" mode: about 3 s for the blob
    with contextlib.ExitStack() as stack:
        if mode == "mesh":
            tracker = cluster.tracker(tmp_path)
            seed = cluster.peer(tmp_path, "seed", tracker=tracker.url, upstream=registry.url)
            node = cluster.peer(
                tmp_path, "b", tracker=tracker.url, extra=["--download-rate", "4MB"]
            )
            stack.enter_context(start_all(tracker, seed, node))
            wait_peers(tracker.url, 2)
            ledger.get(http, seed.url + path, digest, timeout=60)
            wait_held(tracker.url, digest, 1)
        else:
            proxy = stack.enter_context(in_thread(lambda: fault_proxy(registry.host, slow)))
            node = cluster.peer(tmp_path, "b", upstream=proxy.value)
            stack.enter_context(start_all(node))
        assert node.data is not None
        killer = threading.Timer(1.0, node.kill)
        killer.start()
        with pytest.raises(httpx.HTTPError):  # a short read, never a complete-looking 200
            http.get(node.url + path, timeout=60)
        killer.join()
        assert cluster.temp_files(node.data), "the node died before the download began"
        assert digest.split(":")[1] not in {p.name for p in node.data.rglob("*")}
        # back at full speed: the restart must not depend on the slow link
        slow.rate = None
        if "--download-rate" in node.args:
            del node.args[-2:]
        node.start().wait_ready()
        assert cluster.temp_files(node.data) == []  # start-up removed the partial file
        assert verify_cache(node.data) == (0, [])
        head = http.head(node.url + path)
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(data)
        # the in-flight work restarts from scratch on the next request, and completes
        ledger.get(http, node.url + path, digest, timeout=60)
        data_dir = node.data
        procs.wait_for(  # the commit (rename) can trail the last byte sent
            lambda: True if verify_cache(data_dir)[0] == 1 else None, what="commit", timeout=10
        )
        assert verify_cache(node.data) == (1, [])
    ledger.notes["mode"] = mode
