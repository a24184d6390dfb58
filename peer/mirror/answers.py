"""What an origin's answer means: blob bodies being read, errors, headers, closing.

:class:`~peer.mirror.upstream.Upstream` sends the requests (auth, tokens, redirects); the
helpers here read and close what comes back, and map httpx failures and non-2xx answers
onto the peer error tree (:mod:`peer.errors`), with URLs redacted (presigned URLs carry
credentials in their query).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit

import httpx
import trio

from peer.errors import (
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from peer.mirror.blobhttp import RAW_BODY, RawBody

#: Unwanted bodies up to this size are read to the end so the connection can be reused.
MAX_DRAIN: Final = 64 * 1024
#: Shielded budget for closing a response when we are being cancelled.
CLOSE_GRACE: Final = 2.0


class BlobResponse:
    """An open upstream blob body (from :meth:`Upstream.open_blob`).

    Attributes:
        size: Total blob size.
        start: Offset of the first byte of this body (0 when a range was answered with 200).
        length: Number of bytes this body delivers.
    """

    def __init__(self, response: httpx.Response, *, size: int, start: int, length: int) -> None:
        self.size = size
        self.start = start
        self.length = length
        self._response = response
        self._usable = True  # until chunks() is called or open_blob()'s context exits
        self._received: int | None = None  # readinto(): bytes so far
        self._raw: RawBody | None = None
        self._chunks: AsyncIterator[bytes] | None = None  # readinto() without a RawBody
        self._stash = memoryview(b"")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the raw (never decoded) body bytes; call once, inside the context.

        Raises:
            UpstreamUnavailable: The body broke off or ended before ``length`` bytes.
            UpstreamProtocolError: The body ran past ``length``.
        """
        if not self._usable:
            raise RuntimeError("BlobResponse.chunks() is single-use, inside open_blob()")
        self._usable = False
        what = redact(self._response.request.url)
        received = 0
        raw = self._response.aiter_raw()
        try:
            while True:
                with mapped(f"reading {what}"):
                    try:
                        chunk = await anext(raw)
                    except StopAsyncIteration:
                        break
                received += len(chunk)
                if received > self.length:
                    raise UpstreamProtocolError(f"{what}: body longer than {self.length} bytes")
                yield chunk
        finally:
            await aclose_iter(raw)
        if received < self.length:
            raise UpstreamUnavailable(f"{what}: body ended at {received} of {self.length} bytes")

    async def readinto(self, buffer: memoryview) -> int:
        """Read body bytes into ``buffer``; 0 once all ``length`` bytes came. Inside the context.

        Through :class:`~peer.mirror.blobhttp.LeanTransport` the bytes go from the socket
        straight into ``buffer``; other transports (tests) are copied from :meth:`chunks`.
        Do not mix with :meth:`chunks`.

        Raises:
            UpstreamUnavailable: The body broke off or ended before ``length`` bytes.
            UpstreamProtocolError: The body ran past ``length``.
        """
        what = redact(self._response.request.url)
        if self._received is None:
            if not self._usable:
                raise RuntimeError("BlobResponse.readinto() works inside open_blob() only")
            self._received = 0
            raw = self._response.extensions.get(RAW_BODY)
            self._raw = raw if isinstance(raw, RawBody) else None
            if self._raw is None:
                self._chunks = self.chunks()
        if self._raw is not None:
            with mapped(f"reading {what}"):
                n = await self._raw.receive_into(buffer[: self.length - self._received + 1])
        else:
            assert self._chunks is not None
            if not self._stash:
                self._stash = memoryview(await anext(self._chunks, b""))
            n = min(len(buffer), len(self._stash))
            buffer[:n] = self._stash[:n]
            self._stash = self._stash[n:]
        self._received += n
        if self._received > self.length:
            raise UpstreamProtocolError(f"{what}: body longer than {self.length} bytes")
        if not n and self._received < self.length:
            raise UpstreamUnavailable(
                f"{what}: body ended at {self._received} of {self.length} bytes"
            )
        return n

    async def aclose(self) -> None:
        """Finish the fallback iterator of :meth:`readinto`, if any."""
        if self._chunks is not None:
            await aclose_iter(self._chunks)


def redact(url: str | httpx.URL) -> str:
    """URL without query or userinfo (presigned URLs carry credentials in the query)."""
    parts = urlsplit(str(url))
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def media_type_of(response: httpx.Response) -> str:
    """``Content-Type`` without parameters ("" when absent)."""
    return str(response.headers.get("content-type", "")).split(";", 1)[0].strip()


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Translate httpx exceptions into the peer error tree (httpcore ``map_exceptions``)."""
    try:
        yield
    except (httpx.DecodingError, httpx.InvalidURL) as exc:
        raise UpstreamProtocolError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:  # TransportError (timeouts included) and the rest
        raise UpstreamUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


async def read_capped(response: httpx.Response, cap: int, what: str) -> bytes:
    """Read a (decoded) body, refusing more than ``cap`` bytes."""
    body = bytearray()
    chunks = response.aiter_bytes()
    try:
        while True:
            with mapped(f"reading {what}"):
                try:
                    body += await anext(chunks)
                except StopAsyncIteration:
                    return bytes(body)
            if len(body) > cap:
                raise UpstreamProtocolError(f"{what}: body over {cap} bytes")
    finally:
        await aclose_iter(chunks)


async def drain(response: httpx.Response) -> bytes:
    """Read and close an unwanted body, keeping the connection if it is short (≤ MAX_DRAIN)."""
    try:
        return await read_capped(response, MAX_DRAIN, redact(response.request.url))
    except UpstreamError:
        return b""  # too long or broken: closing drops the connection, which is fine
    finally:
        await aclose(response)


def error_for(response: httpx.Response, body: bytes, *, hub_anonymous: bool) -> UpstreamError:
    """The :class:`UpstreamError` for a final non-2xx ``response`` with (drained) ``body``."""
    status = response.status_code
    message = f"{response.request.method} {redact(response.request.url)}: {status}"
    try:
        first = json.loads(body)["errors"][0]
        message += f" {first['code']}: {first.get('message', '')}"[:200]
    except (ValueError, LookupError, TypeError):
        pass
    if status == 404 or (status == 401 and hub_anonymous):
        return UpstreamNotFound(message, status=status)
    if status in {401, 403}:
        return UpstreamDenied(message, status=status)
    if status == 429:
        return UpstreamRateLimited(
            message, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    if status >= 500:
        return UpstreamUnavailable(message, status=status)
    return UpstreamProtocolError(message, status=status)


async def aclose(response: httpx.Response) -> None:
    """Close a response even while being cancelled (bounded by ``CLOSE_GRACE``)."""
    with trio.move_on_after(CLOSE_GRACE, shield=True):
        try:
            await response.aclose()
        except httpx.HTTPError:
            pass  # the connection is gone either way


async def aclose_iter(iterator: AsyncIterator[bytes]) -> None:
    """Finalise an httpx body iterator now rather than at garbage collection."""
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()
