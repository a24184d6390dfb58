"""Tag → digest memory with a TTL and stale-if-error (checklist 5.3, edge cases E5/E6/E25).

Pure: every method takes ``now``. Entries are keyed by (registry, repository, tag, accepted
media types), because a registry may resolve the same tag to different manifests for
different ``Accept`` sets (opencontainers/distribution-spec#207). The table is persisted as
a small JSON file so that a restarted node can still answer a tag while the origin is down.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

LOGGER = logging.getLogger(__name__)

# A node sees a few thousand distinct tags at most; cap memory and file size regardless.
MAX_TAGS: Final = 10_000

TagKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class TagEntry:
    digest: str
    media_type: str
    size: int
    resolved_at: float  # wall-clock seconds (time.time), so it survives restarts


def accept_key(accept_headers: Iterable[str]) -> str:
    """Normalise ``Accept`` header lines: split on commas, drop parameters, sort, dedupe."""
    types = set()
    for line in accept_headers:
        for item in line.split(","):
            media = item.split(";", 1)[0].strip().lower()
            if media:
                types.add(media)
    return ",".join(sorted(types))


def accepts(accept_key_: str, media_type: str) -> bool:
    """Whether a client with this Accept set takes ``media_type`` (absent Accept takes all)."""
    if not accept_key_:
        return True
    types = accept_key_.split(",")
    return media_type in types or "*/*" in types or "application/*" in types


class TagCache:
    """LRU-bounded tag table; see the module docstring."""

    def __init__(self, path: Path | None, *, ttl: float) -> None:
        self.path = path
        self.ttl = ttl
        self._entries: OrderedDict[TagKey, TagEntry] = OrderedDict()
        if path is not None:
            self._load()

    def get(self, key: TagKey) -> TagEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def fresh(self, entry: TagEntry, now: float) -> bool:
        return now - entry.resolved_at < self.ttl

    def put(self, key: TagKey, entry: TagEntry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_TAGS:
            self._entries.popitem(last=False)
        self._save()

    def items(self) -> list[tuple[TagKey, TagEntry]]:
        return list(self._entries.items())

    def _load(self) -> None:
        assert self.path is not None
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            for row in rows[-MAX_TAGS:]:
                key = (str(row["registry"]), str(row["repo"]), str(row["tag"]), str(row["accept"]))
                self._entries[key] = TagEntry(
                    str(row["digest"]), str(row["media_type"]), int(row["size"]),
                    float(row["resolved_at"]),
                )  # fmt: skip
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("ignoring unreadable tag file %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        rows = [
            {"registry": k[0], "repo": k[1], "tag": k[2], "accept": k[3], **asdict(e)}
            for k, e in self._entries.items()
        ]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(rows), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            LOGGER.warning("cannot save tags to %s: %s", self.path, exc)
