"""``allows.txt``: which images this node may mirror (DaoCloud's public-image-mirror rules).

One rule per line, ``#`` starts a comment:

* ``registry/repo`` allows exactly that repository (any tag or digest);
* ``prefix/*`` allows exactly one more path segment below ``prefix``;
* ``prefix/**`` allows any depth below ``prefix``.

Names are compared after Docker Hub normalisation (``docker.io/library/alpine``). The file
is re-read when its modification time or size changes, checked at most once a second, so
operators edit it without a restart. A file that vanishes keeps the last good rules.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

LOGGER = logging.getLogger(__name__)

# Re-stat the file at most this often; a pull makes several requests within a second.
RELOAD_CHECK_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Rules:
    """A parsed rule set; pure."""

    exact: frozenset[str] = frozenset()
    one_level: tuple[str, ...] = ()
    any_depth: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Rules:
        exact: set[str] = set()
        one: list[str] = []
        deep: list[str] = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip().lower()
            if not line:
                continue
            if line.endswith("/**"):
                deep.append(line[:-3])
            elif line.endswith("/*"):
                one.append(line[:-2])
            else:
                exact.add(line)
        return cls(frozenset(exact), tuple(one), tuple(deep))

    def allows(self, image: str) -> bool:
        """Whether ``registry/repository`` is allowed."""
        image = image.lower()
        if image in self.exact:
            return True
        for prefix in self.any_depth:
            if image.startswith(prefix + "/") and len(image) > len(prefix) + 1:
                return True
        for prefix in self.one_level:
            if image.startswith(prefix + "/"):
                rest = image[len(prefix) + 1 :]
                if rest and "/" not in rest:
                    return True
        return False


@dataclass
class AllowList:
    """``Rules`` backed by a file that is reloaded when it changes; ``path=None`` allows all."""

    path: Path | None
    _rules: Rules = field(default_factory=Rules)
    _stamp: tuple[int, int] | None = None
    _checked_at: float = float("-inf")

    def __post_init__(self) -> None:
        if self.path is not None:
            self._reload(force=True)

    def allows(self, image: str, *, now: float) -> bool:
        if self.path is None:
            return True
        if now - self._checked_at >= RELOAD_CHECK_INTERVAL:
            self._checked_at = now
            self._reload()
        return self._rules.allows(image)

    def _reload(self, *, force: bool = False) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if force:
                LOGGER.warning("allows file %s unreadable (%s): denying everything", self.path, exc)
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            LOGGER.warning("allows file %s unreadable (%s): keeping old rules", self.path, exc)
            return
        self._rules = Rules.parse(text)
        self._stamp = stamp
        LOGGER.info("loaded %s", self.path)
