"""The tracker SIGKILLed and restarted on the same address, with an empty memory store.

While it is gone, nodes pull straight from the origin (no waiting on the dead tracker);
once it is back, every node re-announces its full state within one announce interval,
including what it pulled during the outage, and the mesh serves it again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.helpers import cluster
from tests.helpers.cluster import blob_path, holders, start_all, wait_held, wait_peers
from tests.helpers.ledger import Ledger
from tests.helpers.registry import Registry

pytestmark = pytest.mark.slow

INTERVAL = 2.0


def test_tracker_killed_and_restarted(registry: Registry, tmp_path: Path, ledger: Ledger) -> None:
    name = registry.new_repo("library/tracker")
    blobs = [hashlib.shake_256(b"tracker %d" % i).digest(3 * 1024 * 1024) for i in range(3)]
    digests = [registry.push_blob(name, blob) for blob in blobs]
    tracker = cluster.tracker(tmp_path, "--announce-interval", f"{INTERVAL:g}s")
    a = cluster.peer(tmp_path, "a", tracker=tracker.url, upstream=registry.url)
    b = cluster.peer(tmp_path, "b", tracker=tracker.url, upstream=registry.url)
    c = cluster.peer(tmp_path, "c", tracker=tracker.url)  # no origin: the mesh or nothing
    http = cluster.http()
    with start_all(tracker), start_all(a, b, c):
        wait_peers(tracker.url, 3)
        ledger.get(http, a.url + blob_path(name, digests[0]), digests[0])
        wait_held(tracker.url, digests[0], 1)

        tracker.kill()
        # pulls go on through the origin meanwhile, at origin speed
        for node, digest in ((b, digests[0]), (b, digests[1]), (a, digests[2])):
            started = time.monotonic()
            ledger.get(http, node.url + blob_path(name, digest), digest)
            assert time.monotonic() - started < 5
        time.sleep(3 * INTERVAL)  # several failed announces: the nodes are backing off

        tracker.start().wait_ready()
        back = time.monotonic()
        wait_peers(tracker.url, 3, timeout=4 * INTERVAL)
        wait_held(tracker.url, digests[1], 1, timeout=4 * INTERVAL)
        wait_held(tracker.url, digests[2], 1, timeout=4 * INTERVAL)
        rejoined = time.monotonic() - back
        # one interval, its 10 % jitter, and the time it takes to notice
        assert rejoined < INTERVAL * 1.1 + 1.0, rejoined
        assert holders(tracker.url, digests[0]) == {"a", "b"}
        # the mesh works again: C has no origin and gets what B pulled during the outage
        ledger.get(http, c.url + blob_path(name, digests[1]), digests[1], timeout=30)
    ledger.notes["rejoined_s"] = round(rejoined, 2)
