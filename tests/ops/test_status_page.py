"""The tracker's status page (``GET /``) in a real browser, with live data.

A real ``shoal tracker`` process (announce interval 2 s, so a download quiet for 6 s is
"stalled"; a traffic point every 0.2 s) gets two rounds of announces from three peers
through the node's own tracker client: blobs held, two downloads in progress (one moves
between the rounds, one does not), origin and peer byte counters that grow, an error a
node reports, a conflicting announce the tracker refuses, and two tag resolutions (one
whose manifest a node holds, one whose manifest nobody holds). Debian's chromium renders
the page headless, takes a screenshot, and the assertions read the DOM chromium built.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
import trio

from peer.errors import TrackerRejected
from tests.ops.browser import WINDOW, Rendered, png_size, render
from tests.ops.helpers import announce, put_tag, spawn_tracker

MIB = 1024 * 1024
#: The tracker's --announce-interval; the page calls a download stalled after 3 of them.
INTERVAL = 2.0


def _digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


BASE, APP, NEW = _digest("base layer"), _digest("app layer"), _digest("new layer")
APP_MANIFEST, NEW_MANIFEST = _digest("app manifest"), _digest("new manifest")
ORIGIN_ERROR = "docker.io/library/app: bytes 0-1048575 of sha256:abc: origin answered 503"


def _short(digest: str) -> str:
    return f"sha256:{digest[7:19]}…"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    root = tmp_path_factory.mktemp("status-page")
    flags = ("--announce-interval", f"{INTERVAL:g}s", "--peer-ttl", "60s",
             "--traffic-interval", "0.2s")  # fmt: skip
    with spawn_tracker(root / "tracker", *flags) as tracker:
        a, b, c = (os.urandom(16) for _ in range(3))

        async def fill() -> None:
            url = tracker.url
            # Round 1: both downloads start; the counters are a first step.
            await announce(url, "node-a", port=5051, session=a, held=[(BASE, 3 * MIB)],
                           in_progress=[(NEW, 8 * MIB, 2 * MIB)],
                           bytes_from_origin=4 * MIB, bytes_from_peers=6 * MIB)  # fmt: skip
            await announce(url, "node-b", port=5061, session=b, held=[(BASE, 3 * MIB)],
                           in_progress=[(NEW, 8 * MIB, 1 * MIB)])  # fmt: skip
            await trio.sleep(3 * INTERVAL + 0.3)  # several traffic points; node-a stalls
            # Round 2: node-b moved, node-a did not; node-a reports an origin failure.
            await announce(url, "node-a", port=5051, session=a,
                           held=[(BASE, 3 * MIB), (APP, MIB), (APP_MANIFEST, 1024)],
                           in_progress=[(NEW, 8 * MIB, 2 * MIB)],
                           bytes_from_origin=10 * MIB, bytes_from_peers=30 * MIB,
                           errors=[("origin", ORIGIN_ERROR)])  # fmt: skip
            await announce(url, "node-b", port=5061, session=b, held=[(BASE, 3 * MIB)],
                           in_progress=[(NEW, 8 * MIB, 6 * MIB)],
                           bytes_from_peers=5 * MIB)  # fmt: skip
            await announce(url, "node-c", port=5071, session=c, held=[(APP, MIB)])
            with pytest.raises(TrackerRejected):  # another process claims node-c: 409
                await announce(url, "node-c", port=5071, held=[(APP, MIB)])
            await put_tag(url, "library/app:1", APP_MANIFEST)
            await put_tag(url, "library/new:2", NEW_MANIFEST)

        trio.run(fill)
        yield render(tracker.url + "/", root / "browser")


def test_page_renders_with_a_screenshot(page: Rendered) -> None:
    assert page.dom.title == "shoal tracker"
    assert page.dom.headings[0] == "shoal tracker"
    assert png_size(page.screenshot) == WINDOW
    assert page.screenshot.stat().st_size > 10_000  # a rendered page, not a blank frame


def test_swarm_totals(page: Rendered) -> None:
    header, row = page.dom.table("Swarm")
    totals = dict(zip(header, row, strict=True))
    assert totals == {
        "peers": "3", "blobs": "4", "holdings": "7", "transfers": "2",
        "from origin": "10.0 MiB", "from peers": "35.0 MiB", "peer share": "77.8 %",
    }  # fmt: skip


def test_peers_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Peers")
    assert header[:2] == ["peer", "address"]
    by_peer = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert sorted(by_peer) == ["node-a", "node-b", "node-c"]
    assert by_peer["node-a"]["address"] == "127.0.0.1:5051"
    assert (by_peer["node-a"]["blobs"], by_peer["node-a"]["downloading"]) == ("3", "1")
    assert by_peer["node-a"]["from origin"] == "10.0 MiB"
    assert by_peer["node-b"]["from peers"] == "5.0 MiB"


def test_blobs_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Blobs")
    assert header == ["digest", "size", "holders", "in progress", "where"]
    assert sorted(r[:4] for r in rows) == sorted([
        [_short(BASE), "3.0 MiB", "2", "0"],
        [_short(APP), "1.0 MiB", "2", "0"],
        [_short(APP_MANIFEST), "1.0 KiB", "1", "0"],
        [_short(NEW), "8.0 MiB", "0", "2"],
    ])  # fmt: skip


def test_transfers_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Transfers in progress")
    assert header == ["peer", "blob", "held", "size", "done", "last progress", "state"]
    by_peer = {r[0]: r for r in rows}
    assert sorted(by_peer) == ["node-a", "node-b"]
    assert by_peer["node-a"][:5] == ["node-a", _short(NEW), "2.0 MiB", "8.0 MiB", "25 %"]
    assert by_peer["node-b"][:5] == ["node-b", _short(NEW), "6.0 MiB", "8.0 MiB", "75 %"]
    # node-a has held 2 MiB since round 1, three intervals ago; node-b moved in round 2
    # (the page is as old as chromium's start, a few seconds, by the time it renders).
    stalled_a, stalled_b = (int(by_peer[n][5].split()[0]) for n in ("node-a", "node-b"))
    assert by_peer["node-a"][6] == "stalled"
    assert stalled_a >= 3 * INTERVAL
    assert stalled_a - stalled_b >= 3 * INTERVAL - 1
    # "moving" unless chromium took longer than the stall threshold to load the page
    assert by_peer["node-b"][6] == ("moving" if stalled_b < 3 * INTERVAL else "stalled")


# --- what issue 5 asked for ---------------------------------------------------------------


def test_transfers_have_progress_bars(page: Rendered) -> None:
    bars = page.dom.find("progress", section="Transfers")
    values = sorted(round(100 * float(b.attrs["value"]) / float(b.attrs["max"])) for b in bars)
    assert values == [25, 75]
    assert sorted(b.attrs["aria-label"] for b in bars) == ["node-a 25 %", "node-b 75 %"]


def _series(page: Rendered, name: str) -> tuple[list[float], list[int]]:
    (line,) = [e for e in page.dom.find("polyline", section="Traffic")
               if e.attrs.get("data-series") == name]  # fmt: skip
    times = [float(t) for t in line.attrs["data-at"].split()]
    values = [int(v) for v in line.attrs["data-values"].split()]
    assert len(times) == len(values) == len(line.attrs["points"].split())
    return times, values


def test_origin_vs_peers_chart(page: Rendered) -> None:
    (svg,) = page.dom.find("svg", section="Traffic")
    assert svg.attrs["role"] == "img"
    times, origin = _series(page, "origin")
    _, peers = _series(page, "peers")
    assert times == sorted(times)
    assert times[-1] - times[0] >= 3 * INTERVAL
    # ends at the live totals; on the way, round 1's sums were sampled (history, not a dot)
    assert (origin[-1], peers[-1]) == (10 * MIB, 35 * MIB)
    assert (4 * MIB, 6 * MIB) in set(zip(origin, peers, strict=True))
    assert origin == sorted(origin)
    assert peers == sorted(peers)


def test_recent_errors_section(page: Rendered) -> None:
    header, *rows = page.dom.table("Recent errors")
    assert header == ["when", "source", "kind", "message"]
    reported = [r[1:] for r in rows]
    assert ["node-a", "origin", ORIGIN_ERROR] in reported  # what the node reported
    assert [  # what the tracker refused
        "tracker", "peer_conflict",
        "refused /v1/announce: peer id 'node-c' is live under another session",
    ] in reported  # fmt: skip
    assert len(rows) == 2


def test_not_synced_images_section(page: Rendered) -> None:
    header, *rows = page.dom.table("Not synced images")
    assert header == ["image", "manifest", "resolved", "why"]
    # library/app:1's manifest is on node-a: synced, so not listed
    assert [[r[0], r[1], r[3]] for r in rows] == [
        ["docker.io/library/new:2", _short(NEW_MANIFEST), "manifest held by no live node"]
    ]
    assert any(h.startswith("Not synced images (of the 2 most recent") for h in page.dom.headings)


def test_blobs_say_where_they_are(page: Rendered) -> None:
    _, *rows = page.dom.table("Blobs")
    where = {r[0]: r[4] for r in rows}
    assert where[_short(BASE)] == "node-a, node-b"
    assert where[_short(APP)] == "node-a, node-c"
    assert where[_short(NEW)] == "downloading: node-a, node-b"
