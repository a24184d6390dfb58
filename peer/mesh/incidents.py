"""Errors this node reports to the tracker in its next announce (pure: no I/O, no clock).

The tracker's status page lists recent errors across the mesh (``tracker.activity``); a
node contributes what only it sees: origin fetches that failed and peers that sent pieces
whose hash did not match (and were banned for that blob). :class:`IncidentLog` keeps the
errors not yet delivered, at most ``MAX_NODE_ERRORS`` (the newest win), skips a repeat of
one still pending, and forgets them once an announce that carried them was accepted.

Messages go through :func:`scrub` first: one printable line, capped, with URL credentials
and query strings, ``Bearer``/``Basic`` credentials and ``token=``-style values removed,
so nothing secret reaches the tracker (and its page) even if an upstream error quotes it.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final

from tracker import protocol as p

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")
_URL_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_QUERY: Final = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#]*)\?[^\s#]*")
_AUTH: Final = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_KV: Final = re.compile(
    r"(?i)\b(token|password|passwd|secret|access_token|refresh_token|api[_-]?key)"
    r"(\s*[=:]\s*)[^\s,;&]+"
)


def scrub(message: str) -> str:
    """One line without control characters or credentials, at most the protocol's cap."""
    text = _CONTROL.sub(" ", message)
    text = _URL_USERINFO.sub(r"\1", text)
    text = _QUERY.sub(r"\1?…", text)
    text = _AUTH.sub(r"\1 …", text)
    text = _SECRET_KV.sub(r"\1\2…", text)
    text = " ".join(text.split())
    if len(text) > p.MAX_ERROR_MESSAGE:
        text = text[: p.MAX_ERROR_MESSAGE - 1] + "…"
    return text


class IncidentLog:
    """Errors waiting for the next accepted announce (see the module docstring)."""

    def __init__(self, *, capacity: int = p.MAX_NODE_ERRORS) -> None:
        self._pending: deque[p.NodeError] = deque(maxlen=capacity)
        self.dropped = 0  # errors pushed out by newer ones before they were sent

    def note(self, at: float, kind: str, message: str) -> None:
        """Remember an error seen at ``at`` (wall clock); ``kind`` is snake_case."""
        error = p.NodeError(at=max(0.0, at), kind=kind, message=scrub(message))
        if any((e.kind, e.message) == (error.kind, error.message) for e in self._pending):
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(error)

    def pending(self) -> tuple[p.NodeError, ...]:
        """What the next announce carries, oldest first."""
        return tuple(self._pending)

    def delivered(self, sent: tuple[p.NodeError, ...]) -> None:
        """An announce carrying ``sent`` was accepted: forget those errors."""
        ids = {id(e) for e in sent}
        self._pending = deque((e for e in self._pending if id(e) not in ids), self._pending.maxlen)
