"""The human status page at ``GET /``: plain server-rendered HTML (pure).

No JavaScript and no external assets: a table per topic, every value passed through
``html.escape``, and a ``<meta http-equiv="refresh">`` so it stays current on a wall
screen. It shows what an operator asks first: how many peers, which blobs, what is
moving right now, and how much traffic the mesh saved the origin.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Final

from tracker.model import BlobView, PeerView, Stats, TransferView

#: Seconds between automatic reloads of the page.
REFRESH_SECONDS: Final = 5

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5rem}"
    "td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:left}"
    "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".muted{color:#777}"
)


def human_bytes(n: int) -> str:
    """``1536`` → ``"1.5 KiB"``; exact below 1 KiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _short(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}…"


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{v}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td class="muted" colspan="{len(headers)}">none</td></tr>')
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def render_status_page(
    *,
    stats: Stats,
    peers: Sequence[PeerView],
    blobs: Sequence[BlobView],
    transfers: Sequence[TransferView],
    now: float,
) -> str:
    """The whole page.

    Args:
        stats: Totals.
        peers: Peers to list (already capped by the caller).
        blobs: Blobs to list (already capped).
        transfers: Downloads in progress to list (already capped).
        now: Wall clock, for "seen N s ago" and the footer.

    Returns:
        An HTML document.
    """
    total = stats.bytes_from_origin + stats.bytes_from_peers
    saved = f"{100 * stats.bytes_from_peers / total:.1f} %" if total else "n/a"
    summary = _table(
        "Swarm",
        ("peers", "blobs", "holdings", "transfers", "from origin", "from peers", "peer share"),
        [(stats.peers, stats.blobs, stats.holdings, stats.in_progress,
          human_bytes(stats.bytes_from_origin), human_bytes(stats.bytes_from_peers), saved)],
    )  # fmt: skip
    peer_rows = (
        (v.peer_id, f"{v.host}:{v.port}", f"{max(0.0, now - v.last_seen):.0f} s ago", v.held,
         v.in_progress, f"{v.load}/{v.upload_slots}", human_bytes(v.bytes_served),
         human_bytes(v.bytes_from_origin), human_bytes(v.bytes_from_peers),
         "draining" if v.draining else "")
        for v in peers
    )  # fmt: skip
    transfer_rows = (
        (t.peer_id, _short(t.digest), human_bytes(t.bytes_held), human_bytes(t.size),
         f"{100 * t.bytes_held / t.size:.0f} %" if t.size else "")
        for t in transfers
    )  # fmt: skip
    blob_rows = ((_short(b.digest), human_bytes(b.size), b.holders, b.in_progress) for b in blobs)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>shoal tracker</title><style>{_STYLE}</style></head><body>"
        "<h1>shoal tracker</h1>"
        + summary
        + _table("Transfers in progress", ("peer", "blob", "held", "size", "done"), transfer_rows)
        + _table(
            f"Peers (first {len(peers)} of {stats.peers})",
            (
                "peer",
                "address",
                "last seen",
                "blobs",
                "downloading",
                "load",
                "served",
                "from origin",
                "from peers",
                "state",
            ),
            peer_rows,
        )
        + _table(
            f"Blobs (first {len(blobs)} of {stats.blobs})",
            ("digest", "size", "holders", "in progress"),
            blob_rows,
        )
        + f'<p class="muted">{html.escape(stamp)} · refreshes every {REFRESH_SECONDS} s · '
        '<a href="/metrics">metrics</a> · <a href="/openapi.json">API</a></p></body></html>'
    )
