"""How the operator commands talk to people and scripts: rich, plain lines, or JSON.

* On a terminal: rich progress bars (per image and overall: bytes, rate, ETA) and tables.
* Not a terminal (a pipe, a log, CI): one plain line per event, nothing that redraws.
* ``--json``: nothing while working, one JSON document on stdout at the end.

Errors and notes go to stderr in every mode, so stdout stays parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from peer.ops.images import ImageRef
from peer.ops.status import ImageStatus, StuckTransfer
from peer.ops.sync import ImageResult
from peer.ops.verify import VerifyResult


def human_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short(digest: str | None) -> str:
    if not digest:
        return "-"
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def _about(image: ImageRef, error: str | None) -> str:
    """``image: error``, without saying the image twice when the error already starts with it."""
    text = error or "unknown error"
    return text if text.startswith(f"{image}:") else f"{image}: {text}"


class Output:
    """The chosen mode, and the streams it writes to."""

    def __init__(
        self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.json = json_mode
        self.rich = not json_mode and self.stdout.isatty()
        self.console = Console(file=self.stdout) if self.rich else None

    def line(self, text: str = "") -> None:
        if not self.json:
            print(text, file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)

    def document(self, payload: object) -> None:
        print(json.dumps(payload, indent=2), file=self.stdout, flush=True)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        assert self.console is not None
        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    # --- sync ---------------------------------------------------------------------------

    def sync_reporter(self) -> RichSyncReporter | PlainSyncReporter | QuietSyncReporter:
        if self.json:
            return QuietSyncReporter()
        if self.console is not None:
            return RichSyncReporter(self.console)
        return PlainSyncReporter(self)

    def sync_summary(self, results: Sequence[ImageResult]) -> None:
        counts = {
            s: sum(1 for r in results if r.state == s) for s in ("synced", "denied", "failed")
        }
        received = sum(r.received for r in results)
        if self.json:
            self.document(
                {**counts, "received": received, "images": [r.to_json() for r in results]}
            )
            return
        summary = (
            f"sync: {counts['synced']} synced, {counts['denied']} denied, "
            f"{counts['failed']} failed; {human_bytes(received)} received"
        )
        if self.console is not None:
            rows = [
                (str(r.image), r.state, short(r.digest), str(r.blobs), human_bytes(r.size),
                 f"{r.seconds:.1f}s")
                for r in results
            ]  # fmt: skip
            self.table(summary, ("image", "state", "digest", "blobs", "size", "time"), rows)
        for r in results:
            if r.state != "synced":
                self.line(f"{r.state.upper()} {_about(r.image, r.error)}")
        if self.console is None:
            self.line(summary)

    # --- verify -------------------------------------------------------------------------

    def verify_result(self, result: VerifyResult) -> None:
        if self.json:
            return
        if result.ok:
            self.line(f"Image {result.image} is verified.")
            self.line(f"Digest: {result.digest}")
            self.line(
                f"  {result.manifests} manifest(s), {result.blobs} blob(s), "
                f"{human_bytes(result.size)} checked"
            )
            return
        self.line(f"Image {result.image} is NOT verified:")
        for difference in result.differences:
            self.line(f"  - {difference}")
        if result.digest != result.upstream_digest:
            self.line(
                f"Digest: {result.digest or '-'} (node), {result.upstream_digest or '-'} (upstream)"
            )
        else:
            self.line(f"Digest: {result.digest}")

    # --- status -------------------------------------------------------------------------

    def status_report(
        self,
        results: Sequence[ImageStatus],
        sources: Sequence[str],
        *,
        stuck: Sequence[StuckTransfer] | None = None,
        stuck_after: float = 0.0,
    ) -> None:
        """Images not synced, and (``stuck`` given: the tracker was asked) stuck downloads."""
        synced = sum(1 for r in results if r.synced)
        summary = f"status: {synced} of {len(results)} image(s) synced"
        if stuck is not None:
            summary += f", {len(stuck)} download(s) stuck for {stuck_after:g}s or more"
        if self.json:
            doc: dict[str, object] = {
                "synced": synced,
                "total": len(results),
                "checked": list(sources),
                "images": [r.to_json() for r in results],
            }
            if stuck is not None:
                doc["stuck_after"] = stuck_after
                doc["stuck_transfers"] = [s.to_json() for s in stuck]
            self.document(doc)
            return
        if self.console is not None:
            rows = [(str(r.image), r.state, "\n".join(r.details())) for r in results]
            rows += [("(mesh)", "stuck", s.describe()) for s in stuck or ()]
            self.table(summary, ("image", "state", "details"), rows)
            return
        for r in results:
            self.line(f"{r.state.upper() if not r.synced else 'synced'} {r.image}")
            for detail in r.details():
                self.line(f"  - {detail}")
        for s in stuck or ():
            self.line(f"STUCK {s.describe()}")
        self.line(summary)


class QuietSyncReporter:
    """``--json``: nothing until the end."""

    def __enter__(self) -> QuietSyncReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        pass

    def advance(self, image: ImageRef, nbytes: int) -> None:
        pass

    def finished(self, result: ImageResult) -> None:
        pass


class PlainSyncReporter(QuietSyncReporter):
    """One line when an image resolves and one when it is done."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        self.out.line(f"fetching {image}: {blobs} blob(s), {human_bytes(total)}")

    def finished(self, result: ImageResult) -> None:
        if result.state == "synced":
            self.out.line(
                f"synced {result.image} {result.digest} "
                f"({human_bytes(result.size)}, {result.seconds:.1f}s)"
            )
        else:
            self.out.line(f"{result.state} {_about(result.image, result.error)}")


class RichSyncReporter(QuietSyncReporter):
    """A bar per image and an overall bar, with bytes, rate and time remaining."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.overall = self.progress.add_task("[bold]all images", total=0)
        self.tasks: dict[ImageRef, TaskID] = {}

    def __enter__(self) -> RichSyncReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        self.tasks[image] = self.progress.add_task(str(image), total=total)
        task = self.progress.tasks[self.overall]
        self.progress.update(self.overall, total=(task.total or 0) + total)

    def advance(self, image: ImageRef, nbytes: int) -> None:
        self.progress.advance(self.tasks[image], nbytes)
        self.progress.advance(self.overall, nbytes)

    def finished(self, result: ImageResult) -> None:
        mark = {"synced": "[green]✓", "denied": "[yellow]denied", "failed": "[red]✗"}[result.state]
        task = self.tasks.get(result.image)
        if task is None:
            self.tasks[result.image] = self.progress.add_task(f"{mark} {result.image}", total=0)
        else:
            self.progress.update(task, description=f"{mark} {result.image}")
