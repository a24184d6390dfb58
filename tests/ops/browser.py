"""Render a page in Debian's chromium, headless, and read the DOM it built.

``chromium --dump-dom`` prints the document *after* parsing and running its scripts, so
assertions see what a browser shows, not the bytes the server sent. :class:`Dom` turns that
serialisation back into the few things the status-page test asks about: headings, the
tables under each heading, and every element with its attributes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Final

from tests.helpers import procs

#: A cold chromium start plus one page load takes ~2 s here; a minute means it is stuck.
RENDER_TIMEOUT: Final = 60.0
FLAGS: Final = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
WINDOW: Final = (1280, 900)


@dataclass(frozen=True)
class Element:
    tag: str
    attrs: dict[str, str]
    section: str  # text of the h2 it sits under ("" before the first)


@dataclass
class Dom(HTMLParser):
    """The parts of a rendered document the tests look at."""

    headings: list[str] = field(default_factory=list)
    tables: dict[str, list[list[str]]] = field(default_factory=dict)  # by h2 text
    elements: list[Element] = field(default_factory=list)
    title: str = ""

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._section = ""
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self._in: list[str] = []

    @classmethod
    def parse(cls, html: str) -> Dom:
        dom = cls()
        dom.feed(html)
        dom.close()
        return dom

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, self._section))
        if tag in ("h1", "h2", "h3", "td", "th", "title"):
            self._text = []
        elif tag == "tr":
            self._row = []
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        text = " ".join("".join(self._text or []).split())
        if tag in ("h1", "h2", "h3"):
            self.headings.append(text)
            if tag == "h2":
                self._section = text
        elif tag == "title":
            self.title = text
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None
        if tag in ("h1", "h2", "h3", "td", "th", "title"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def table(self, prefix: str) -> list[list[str]]:
        """Rows (header row included) of the table under the heading starting with ``prefix``."""
        for title, rows in self.tables.items():
            if title.startswith(prefix):
                return rows
        raise AssertionError(f"no table under a heading {prefix!r}; headings: {self.headings}")

    def find(self, tag: str, *, section: str | None = None) -> list[Element]:
        return [
            e for e in self.elements
            if e.tag == tag and (section is None or e.section.startswith(section))
        ]  # fmt: skip


@dataclass(frozen=True)
class Rendered:
    dom: Dom
    html: str
    screenshot: Path


def render(url: str, workdir: Path) -> Rendered:
    """Load ``url`` in headless chromium; return its DOM and a screenshot of the window."""
    procs.require_binary("chromium", "chromium")
    workdir.mkdir(parents=True, exist_ok=True)
    shot = workdir / "page.png"
    result = procs.run(
        ["chromium", *FLAGS, f"--user-data-dir={workdir / 'profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", "--dump-dom", url],
        timeout=RENDER_TIMEOUT,
    )  # fmt: skip
    if result.returncode != 0 or "<html" not in result.stdout:
        raise procs.ProcessFailed(procs.describe(result))
    return Rendered(Dom.parse(result.stdout), result.stdout, shot)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (PNG spec 11.2.2)."""
    data = path.read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height
