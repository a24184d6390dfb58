"""The human status page at ``GET /``: plain server-rendered HTML (pure).

No JavaScript and no external assets: a table per topic, every value passed through
``html.escape``, ``<progress>`` bars, one inline SVG chart (``tracker.status_chart``), and
a ``<meta http-equiv="refresh">`` so it stays current on a wall screen. It shows what an
operator asks first: how many peers; how much traffic the mesh saved the origin, now and
over time; what is moving right now and what stalled; what went wrong lately; which
resolved images are not in the mesh; and which blobs exist and on which nodes. The data
comes in one :class:`~tracker.status_data.StatusData`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tracker.model import HolderView, TransferView
from tracker.status_chart import traffic_chart
from tracker.status_data import StatusData

#: Seconds between automatic reloads of the page.
REFRESH_SECONDS: Final = 5
#: Holder names listed per blob before "+N more".
WHERE_NAMES: Final = 6


@dataclass(frozen=True, slots=True)
class Html:
    """A table cell already rendered as markup (everything else is escaped)."""

    markup: str


_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5rem}"
    "td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:left}"
    "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".muted{color:#777}.bad{color:#b00020;font-weight:600}"
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
        cells = "".join(_cell(v) for v in row)
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td class="muted" colspan="{len(headers)}">none</td></tr>')
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(v: object) -> str:
    if isinstance(v, Html):
        return f"<td>{v.markup}</td>"
    if isinstance(v, int | float):
        return f'<td class="n">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def _ago(now: float, then: float) -> str:
    return f"{max(0.0, now - then):.0f} s ago"


def _where(holders: Sequence[HolderView]) -> str:
    """``node-a, node-b; downloading: node-c`` (at most ``WHERE_NAMES`` names each)."""

    def names(ids: list[str]) -> str:
        more = f" +{len(ids) - WHERE_NAMES} more" if len(ids) > WHERE_NAMES else ""
        return ", ".join(ids[:WHERE_NAMES]) + more

    whole = [h.peer_id for h in holders if h.complete]
    partial = [h.peer_id for h in holders if not h.complete]
    parts = [names(whole)] if whole else []
    parts += [f"downloading: {names(partial)}"] if partial else []
    return "; ".join(parts) or "nowhere live"


def _progress(t: TransferView, stall_after: float, now: float) -> tuple[object, ...]:
    pct = f"{100 * t.bytes_held / t.size:.0f} %" if t.size else ""
    bar = Html(
        f'<progress value="{t.bytes_held}" max="{max(t.size, 1)}" '
        f'aria-label="{html.escape(t.peer_id)} {html.escape(pct)}"></progress> {pct}'
    )
    state: object
    if t.last_progress is None:
        last, state = "unknown", ""
    else:
        last = _ago(now, t.last_progress)
        stalled = now - t.last_progress >= stall_after
        state = Html('<span class="bad">stalled</span>') if stalled else "moving"
    return (t.peer_id, _short(t.digest), human_bytes(t.bytes_held), human_bytes(t.size), bar,
            last, state)  # fmt: skip


def render_status_page(page: StatusData) -> str:
    """The whole page, from what :func:`tracker.status_data.gather_page` read."""
    now, stats = page.now, page.stats
    total = stats.bytes_from_origin + stats.bytes_from_peers
    saved = f"{100 * stats.bytes_from_peers / total:.1f} %" if total else "n/a"
    summary = _table(
        "Swarm",
        ("peers", "blobs", "holdings", "transfers", "from origin", "from peers", "peer share"),
        [(stats.peers, stats.blobs, stats.holdings, stats.in_progress,
          human_bytes(stats.bytes_from_origin), human_bytes(stats.bytes_from_peers), saved)],
    )  # fmt: skip
    chart = (
        "<h2>Traffic: bytes from origin vs peers</h2>"
        + traffic_chart(page.traffic, human_bytes)
        + '<p class="muted">Sums of the counters live nodes report (each a total since that '
        "node started), sampled over time; a node leaving or restarting lowers the sums.</p>"
    )
    transfer_rows = (_progress(t, page.stall_after, now) for t in page.transfers)
    error_rows = ((_ago(now, e.at), e.source, e.kind, e.message) for e in page.errors)
    synced_rows = (
        (x.image, _short(x.digest), _ago(now, x.resolved_at), x.reason) for x in page.not_synced
    )
    peer_rows = (
        (v.peer_id, f"{v.host}:{v.port}", _ago(now, v.last_seen), v.held,
         v.in_progress, f"{v.load}/{v.upload_slots}", human_bytes(v.bytes_served),
         human_bytes(v.bytes_from_origin), human_bytes(v.bytes_from_peers),
         "draining" if v.draining else "")
        for v in page.peers
    )  # fmt: skip
    blob_rows = (
        (_short(b.digest), human_bytes(b.size), b.holders, b.in_progress,
         _where(page.where.get(b.digest, ())))
        for b in page.blobs
    )  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>shoal tracker</title><style>{_STYLE}</style></head><body>"
        "<h1>shoal tracker</h1>"
        + summary
        + chart
        + _table(
            "Transfers in progress",
            ("peer", "blob", "held", "size", "done", "last progress", "state"),
            transfer_rows,
        )
        + f'<p class="muted">stalled: no new bytes for {page.stall_after:.0f} s or more '
        "(<code>GET /admin/transfers?stalled_for=SECONDS</code>, "
        "<code>shoal status --tracker URL</code>)</p>"
        + _table(
            f"Recent errors (newest first, {len(page.errors)} shown)",
            ("when", "source", "kind", "message"),
            error_rows,
        )
        + _table(
            f"Not synced images (of the {page.tags_checked} most recent tag resolutions)",
            ("image", "manifest", "resolved", "why"),
            synced_rows,
        )
        + '<p class="muted">A tag a node resolved at the origin whose manifest no live node '
        "holds whole: its next pull goes to the origin. Layers of held manifests: "
        "<code>shoal status</code>.</p>"
        + _table(
            f"Peers (first {len(page.peers)} of {stats.peers})",
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
            f"Blobs (first {len(page.blobs)} of {stats.blobs})",
            ("digest", "size", "holders", "in progress", "where"),
            blob_rows,
        )
        + f'<p class="muted">{html.escape(stamp)} · refreshes every {REFRESH_SECONDS} s · '
        '<a href="/metrics">metrics</a> · <a href="/openapi.json">API</a></p></body></html>'
    )
