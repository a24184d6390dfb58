"""Single ``Range`` requests on blobs (RFC 9110 §14), pure.

Only one range is honoured. Multi-range requests (zstd:chunked partial pulls) get the full
body with ``200``, which RFC 9110 allows and every client accepts (checklist E11); a syntax
we do not understand is ignored the same way (RFC 9110: a server MAY ignore Range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_SINGLE: Final = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Inclusive ``first``..``last`` of a body of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.size}"


class Unsatisfiable(Exception):
    """The range lies outside the body: answer 416 with ``Content-Range: bytes */size``."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Resolve a ``Range`` header against a body of ``size`` bytes.

    Returns:
        The range to serve with 206, or ``None`` to serve the whole body with 200.

    Raises:
        Unsatisfiable: a well-formed single range that selects nothing.
    """
    if header is None:
        return None
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return None  # multi-range or unknown unit: full 200
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - n), size - 1, size)
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        raise Unsatisfiable
    if first >= size:
        raise Unsatisfiable
    return ByteRange(first, min(last, size - 1), size)
