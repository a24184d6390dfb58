"""Slow and stalled sources: hedging and timeouts move a pull on to whoever is fast.

* Peers (real processes): of three holders one is frozen with SIGSTOP (its sockets stay
  open, nothing answers) and one uploads at 1 MB/s; a node without an origin still pulls
  at about the speed of the healthy one.
* Origin (a proxy that trickles or stops, tests/helpers/faultproxy.py): a node whose
  origin crawls or hangs gets the blob from a peer that holds it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import trio

from tests.helpers import cluster
from tests.helpers.cluster import blob_path, start_all, wait_held, wait_peers
from tests.helpers.faultproxy import Faults, fault_proxy
from tests.helpers.ledger import Ledger
from tests.helpers.mesh import mesh_nodes, metric, running_tracker
from tests.helpers.mesh import wait_held as wait_held_async
from tests.helpers.registry import Registry

MiB = 1024 * 1024


@pytest.mark.slow
def test_frozen_and_slow_peers_are_routed_around(
    registry: Registry, tmp_path: Path, ledger: Ledger
) -> None:
    name = registry.new_repo("library/slowpeer")
    blobs = [hashlib.shake_256(b"slow peers %d" % i).digest(8 * MiB) for i in range(2)]
    digests = [registry.push_blob(name, blob) for blob in blobs]
    tracker = cluster.tracker(tmp_path)
    frozen = cluster.peer(tmp_path, "frozen", tracker=tracker.url, upstream=registry.url)
    slow = cluster.peer(tmp_path, "slow", tracker=tracker.url, upstream=registry.url,
                        extra=["--upload-rate", "1MB"])  # fmt: skip
    fast = cluster.peer(tmp_path, "fast", tracker=tracker.url, upstream=registry.url)
    b = cluster.peer(tmp_path, "b", tracker=tracker.url)
    http = cluster.http()
    with start_all(tracker), start_all(frozen, slow, fast, b):
        wait_peers(tracker.url, 4)
        for digest in digests:
            for seed in (frozen, slow, fast):
                ledger.get(http, seed.url + blob_path(name, digest), digest, timeout=60)
            wait_held(tracker.url, digest, 3)
        # the first pull links B to all three holders
        ledger.get(http, b.url + blob_path(name, digests[0]), digests[0], timeout=60)
        frozen.pause()  # mid-link: B's requests to it go unanswered
        try:
            started = time.monotonic()
            ledger.get(http, b.url + blob_path(name, digests[1]), digests[1], timeout=60)
            took = time.monotonic() - started
        finally:
            frozen.resume()
        # the slow peer alone would need 8 s, a wait on the frozen one 10 s per piece
        assert took < 8, took
        # byte counts are added once the download is done, which can trail the last byte
        deadline = time.monotonic() + 10
        while metric(text := http.get(b.url + "/metrics").text, "shoal_swarm_downloads"):
            assert time.monotonic() < deadline, "the download never ended"
            time.sleep(0.05)
        assert metric(text, "shoal_mesh_download_bytes_total", source="peers") == 2 * 8 * MiB
    ledger.notes["pull_s"] = round(took, 2)


@pytest.mark.parametrize("fault", ["trickle", "stall"])
async def test_slow_origin_hands_over_to_a_peer(
    registry: Registry, tmp_path: Path, ledger: Ledger, fault: str
) -> None:
    name = registry.new_repo("library/sloworigin")
    data = hashlib.shake_256(b"slow origin " + fault.encode()).digest(8 * MiB)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    faults = Faults(rate=256_000) if fault == "trickle" else Faults(stall_after=0)
    async with running_tracker() as tracker, fault_proxy(registry.host, faults) as proxy:
        upstreams = {0: {"docker.io": registry.url}, 1: {"docker.io": proxy}}
        async with mesh_nodes(tmp_path, tracker, 2, upstreams_for=upstreams.__getitem__) as (
            a,
            b,
        ):
            async with a.client() as client:
                ledger.check(await client.get(path), digest)
            await wait_held_async(tracker, digest)
            started = trio.current_time()
            async with b.client() as client:
                with trio.fail_after(30):
                    ledger.check(await client.get(path), digest)
                took = trio.current_time() - started
                # the download's byte counts are added once it is done, which can trail the
                # client's last byte (the last hash record goes to the tracker first)
                with trio.fail_after(10):
                    while True:
                        text = (await client.get("/metrics")).text
                        if metric(text, "shoal_swarm_downloads") == 0:
                            break
                        await trio.sleep(0.05)
    # the trickling origin would need 32 s for the blob; the frozen one, forever
    assert took < 8, took
    assert metric(text, "shoal_mesh_download_bytes_total", source="peers") > len(data) / 2
    ledger.notes["pull_s"] = round(took, 2)
