"""Just enough ASGI for the tracker: read a capped body, send a response.

The tracker is one small ASGI callable served by hypercorn (``tracker.service``), so it
needs no web framework; these helpers are the only place that touches ASGI messages.
:class:`BodyBuffer` is sans-IO (fed chunk by chunk, refuses past its cap), so the cap is
enforced while reading, before any parser sees a byte.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tracker.errors import BadRequest, BodyTooLarge, TrackerError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = "application/json"


class BodyBuffer:
    """Accumulates a request body and refuses it once it exceeds ``limit`` bytes.

    Args:
        limit: Largest body accepted.
    """

    __slots__ = ("_chunks", "_limit", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Add a chunk.

        Raises:
            BodyTooLarge: The body so far exceeds the limit (the buffer keeps nothing more).
        """
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            raise BodyTooLarge(f"body exceeds {self._limit} bytes")
        if data:
            self._chunks.append(data)

    def getvalue(self) -> bytes:
        """The whole body fed so far."""
        return b"".join(self._chunks)


@dataclass(slots=True)
class Request:
    """The parts of an ASGI HTTP request the tracker routes look at."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    receive: Receive = field(repr=False)
    consumed: bool = field(default=False, repr=False)  # body() read to the end

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        """Decode method, path, query (last value wins) and headers (lower-cased)."""
        try:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        except ValueError:  # parse_qsl only raises with strict_parsing; be safe anyway
            query = {}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(scope["method"], scope["path"], query, headers, receive)

    async def body(self, limit: int) -> bytes:
        """Read the whole body, refusing it past ``limit`` bytes.

        Raises:
            BodyTooLarge: ``Content-Length`` or the bytes received exceed ``limit``.
            BadRequest: ``Content-Length`` is not a number.
        """
        declared = self.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
                raise BadRequest("Content-Length is not a number")
            if int(declared) > limit:
                raise BodyTooLarge(f"body of {declared} bytes exceeds {limit}")
        buffer = BodyBuffer(limit)
        while True:
            message = await self.receive()
            if message["type"] != "http.request":  # http.disconnect
                self.consumed = True
                return buffer.getvalue()
            buffer.feed(message.get("body", b""))
            if not message.get("more_body", False):
                self.consumed = True
                return buffer.getvalue()

    def body_unread(self) -> bool:
        """Whether the client sent a body that nobody read (an error answered first)."""
        if self.consumed:
            return False
        length = self.headers.get("content-length")
        return "transfer-encoding" in self.headers or length not in (None, "0")

    def media_type(self) -> str:
        """The ``Content-Type`` without parameters, lower-cased ("" when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response: status, headers and body."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, payload: object, *, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A JSON response (compact, UTF-8)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, JSON_TYPE, headers)


def error_response(error: TrackerError) -> Response:
    """Render any tracker error as ``{"error": code, "message": ...}`` with its status."""
    headers: list[tuple[str, str]] = []
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers.append(("retry-after", str(max(1, round(retry_after)))))
    allow = getattr(error, "allow", None)
    if allow is not None:
        headers.append(("allow", ", ".join(allow)))
    challenge = getattr(error, "challenge", None)
    if error.status_hint == 401 and challenge is not None:
        headers.append(("www-authenticate", challenge))
    payload = {"error": error.code, "message": error.message}
    return json_response(error.status_hint, payload, headers=tuple(headers))


async def send_response(send: Send, response: Response, *, close: bool = False) -> None:
    """Send ``response`` as one ``http.response.start`` and one body message.

    ``close``: say ``Connection: close``. Pass it when the request body was left unread:
    the server then closes the connection after the response, and a client that was not
    told would send its next request on a dying keep-alive connection and see it dropped
    without an answer (found by tests/fuzz/test_tracker.py).
    """
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *((k.encode(), v.encode()) for k, v in response.headers),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
