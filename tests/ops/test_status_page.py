"""The tracker's status page (``GET /``) in a real browser, with live data.

A real ``shoal tracker`` process gets announces from three peers (blobs held, two
downloads in progress, origin and peer byte counters); Debian's chromium renders the page
headless, takes a screenshot, and the assertions read the DOM chromium built.

Issue 5 asks the page for more than it has today. Each missing piece is a strict xfail
below, naming what is missing; when the tracker grows it, the xfail turns into a failure
that says "remove the marker".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import trio

from tests.ops.browser import WINDOW, Rendered, png_size, render
from tests.ops.helpers import announce, spawn_tracker

MIB = 1024 * 1024


def _digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


BASE, APP, NEW = _digest("base layer"), _digest("app layer"), _digest("new layer")


def _short(digest: str) -> str:
    return f"sha256:{digest[7:19]}…"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    root = tmp_path_factory.mktemp("status-page")
    with spawn_tracker(root / "tracker") as tracker:

        async def fill() -> None:
            await announce(tracker.url, "node-a", port=5051,
                           held=[(BASE, 3 * MIB), (APP, MIB)],
                           in_progress=[(NEW, 8 * MIB, 2 * MIB)],
                           bytes_from_origin=10 * MIB, bytes_from_peers=30 * MIB)  # fmt: skip
            await announce(tracker.url, "node-b", port=5061, held=[(BASE, 3 * MIB)],
                           in_progress=[(NEW, 8 * MIB, 6 * MIB)],
                           bytes_from_peers=5 * MIB)  # fmt: skip
            await announce(tracker.url, "node-c", port=5071, held=[(APP, MIB)])

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
        "peers": "3", "blobs": "3", "holdings": "6", "transfers": "2",
        "from origin": "10.0 MiB", "from peers": "35.0 MiB", "peer share": "77.8 %",
    }  # fmt: skip


def test_peers_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Peers")
    assert header[:2] == ["peer", "address"]
    by_peer = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert sorted(by_peer) == ["node-a", "node-b", "node-c"]
    assert by_peer["node-a"]["address"] == "127.0.0.1:5051"
    assert (by_peer["node-a"]["blobs"], by_peer["node-a"]["downloading"]) == ("2", "1")
    assert by_peer["node-a"]["from origin"] == "10.0 MiB"
    assert by_peer["node-b"]["from peers"] == "5.0 MiB"


def test_blobs_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Blobs")
    assert header == ["digest", "size", "holders", "in progress"]
    assert sorted(rows) == sorted([
        [_short(BASE), "3.0 MiB", "2", "0"],
        [_short(APP), "1.0 MiB", "2", "0"],
        [_short(NEW), "8.0 MiB", "0", "2"],
    ])  # fmt: skip


def test_transfers_table(page: Rendered) -> None:
    header, *rows = page.dom.table("Transfers in progress")
    assert header == ["peer", "blob", "held", "size", "done"]
    assert sorted(rows) == [
        ["node-a", _short(NEW), "2.0 MiB", "8.0 MiB", "25 %"],
        ["node-b", _short(NEW), "6.0 MiB", "8.0 MiB", "75 %"],
    ]


# --- what issue 5 asks for and the page does not have yet ----------------------------------


def missing(reason: str) -> pytest.MarkDecorator:
    """A strict xfail for a gap; a crash in the test itself (not an assert) still fails."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


@missing(reason="tracker status page: transfers show a '25 %' text cell, no progress bars")
def test_transfers_have_progress_bars(page: Rendered) -> None:
    bars = page.dom.find("progress", section="Transfers") or [
        e for e in page.dom.elements
        if e.attrs.get("role") == "progressbar" and e.section.startswith("Transfers")
    ]  # fmt: skip
    values = sorted(
        round(100 * float(b.attrs.get("value") or b.attrs.get("aria-valuenow") or 0)
              / float(b.attrs.get("max") or b.attrs.get("aria-valuemax") or 100))
        for b in bars
    )  # fmt: skip
    assert values == [25, 75]


@missing(reason="tracker status page: no chart of bytes from origin vs peers over time "
         "(the tracker keeps only current totals, no history)")  # fmt: skip
def test_origin_vs_peers_chart(page: Rendered) -> None:
    charts = page.dom.find("svg") + page.dom.find("canvas")
    assert charts, "no <svg> or <canvas> chart on the page"


@missing(reason="tracker status page: no recent-errors section (the tracker records none)")
def test_recent_errors_section(page: Rendered) -> None:
    assert any("error" in h.lower() for h in page.dom.headings), page.dom.headings


@missing(reason="tracker status page: no not-synced images section (the tracker knows no "
         "image list; `shoal status` computes it client-side)")  # fmt: skip
def test_not_synced_images_section(page: Rendered) -> None:
    assert any("not synced" in h.lower() for h in page.dom.headings), page.dom.headings


@missing(reason="tracker status page: the blobs table counts holders but does not say "
         "which peers hold a blob")  # fmt: skip
def test_blobs_say_where_they_are(page: Rendered) -> None:
    _, *rows = page.dom.table("Blobs")
    (base_row,) = [r for r in rows if r[0] == _short(BASE)]
    assert "node-a" in " ".join(base_row)
    assert "node-b" in " ".join(base_row)
