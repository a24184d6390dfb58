"""A lean httpx transport for blob bodies: trio sockets and :mod:`peer.mirror.h1`.

Theory of operation. :class:`~peer.mirror.upstream.Upstream` keeps httpx for its logic
(auth challenges, tokens, redirects, error mapping) but sends blob ``GET``s through this
transport, which httpx calls like any other. Where httpcore hands a body over in reads of
at most ``READ_NUM_BYTES`` through h11's buffer and several generator layers, this one
reads up to :data:`READ_SIZE` straight off the socket into one ``bytes`` per read and
passes it on (one copy, kernel to Python), never reading past the body.

Connections are kept per origin (scheme, host, port) for reuse, at most
:data:`MAX_IDLE_PER_ORIGIN` idle each, once a body was read to its end on a keep-alive
response. An idle connection the server has closed meanwhile shows up as an error before
the first byte of the response; the request is then sent once more on a new connection
(``GET`` is idempotent). There is no cap on active connections here: the node opens at
most one origin body per blob download in flight (single flight), and the mesh's origin
ranges are bounded by its scheduler.

Timeouts come from httpx's per-request ``timeout`` extension (connect, read, write), and
failures leave as the httpx exceptions httpcore would raise (``ConnectError``,
``ReadTimeout``, ``RemoteProtocolError``…), which :mod:`peer.mirror.upstream` maps.
"""

from __future__ import annotations

import contextlib
import math
import select
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Final

import h11
import httpx
import trio

from peer.mirror.h1 import ResponseReader

# Largest single read of a body. The loopback socket buffer auto-tunes to about 6 MiB on
# Linux (tcp_rmem max), and a busy node finds several MiB waiting; 4 MiB per read keeps
# the per-read overhead (one trio checkpoint, one allocation) under a few percent.
READ_SIZE: Final = 4 * 1024 * 1024
# Reads of a response head: small, so that little of the body lands in h11's buffer.
HEAD_READ_SIZE: Final = 16 * 1024
# Idle keep-alive connections kept per origin (a cold multi-layer pull opens a few at once;
# containerd fetches 3 layers in parallel by default).
MAX_IDLE_PER_ORIGIN: Final = 8

_Origin = tuple[str, str, int]
#: Response extension holding the body stream, for :meth:`RawBody.receive_into`.
RAW_BODY: Final = "shoal.raw_body"


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over trio for big bodies (see the module docstring).

    Args:
        ssl_context: For ``https`` origins; default: httpx's (certifi, or ``SSL_CERT_FILE``).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[trio.abc.Stream]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {request.url.scheme!r}")
        if request.method not in ("GET", "HEAD"):
            raise httpx.UnsupportedProtocol(f"{request.method}: this transport only reads")
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request))
        timeouts = request.extensions.get("timeout", {})
        reused = self._checkout(origin)
        if reused is not None:
            try:
                return await self._exchange(request, origin, reused, timeouts)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                pass  # the server closed it while idle: once more, on a new connection
        stream = await self._connect(request, origin, timeouts)
        return await self._exchange(request, origin, stream, timeouts)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for streams in idle.values():
            for stream in streams:
                await trio.aclose_forcefully(stream)

    # -- connections ---------------------------------------------------------------------
    def _checkout(self, origin: _Origin) -> trio.abc.Stream | None:
        streams = self._idle.get(origin)
        while streams:
            stream = streams.pop()
            if _looks_alive(stream):
                return stream
            _close_now(stream)
        return None

    def _checkin(self, origin: _Origin, stream: trio.abc.Stream) -> bool:
        streams = self._idle.setdefault(origin, [])
        if self._closed or len(streams) >= MAX_IDLE_PER_ORIGIN:
            return False
        streams.append(stream)
        return True

    async def _connect(
        self, request: httpx.Request, origin: _Origin, timeouts: dict[str, float | None]
    ) -> trio.abc.Stream:
        scheme, host, port = origin
        with _mapped(request, httpx.ConnectTimeout, httpx.ConnectError):
            with trio.fail_after(_seconds(timeouts.get("connect"))):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = httpx.create_ssl_context()
                        self._ssl.set_alpn_protocols(["http/1.1"])
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=host)
                    stream = tls
                    await tls.do_handshake()
        return stream

    async def _exchange(
        self,
        request: httpx.Request,
        origin: _Origin,
        stream: trio.abc.Stream,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        reader = ResponseReader()
        headers = [(k.lower(), v) for k, v in request.headers.raw]
        read_timeout = _seconds(timeouts.get("read"))
        try:
            data = reader.request(request.method.encode(), request.url.raw_path, headers)
            with _mapped(request, httpx.WriteTimeout, httpx.WriteError):
                with trio.fail_after(_seconds(timeouts.get("write"))):
                    await stream.send_all(data)
            while True:
                with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                    event = reader.next_event()
                if event is h11.NEED_DATA:
                    with _mapped(request, httpx.ReadTimeout, httpx.ReadError):
                        with trio.fail_after(read_timeout):
                            chunk = await stream.receive_some(reader.read_hint(HEAD_READ_SIZE))
                    with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                        reader.receive_data(bytes(chunk))
                    continue
                assert isinstance(event, h11.Response)  # the reader raises on anything else
                break
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        body = RawBody(self, request, origin, stream, reader, read_timeout)
        return httpx.Response(
            event.status_code,
            headers=event.headers,
            stream=body,
            request=request,
            extensions={
                "http_version": b"HTTP/" + event.http_version,
                "reason_phrase": event.reason,
                RAW_BODY: body,
            },
        )


class RawBody(httpx.AsyncByteStream):
    """A response body straight off the connection; returns it to the pool when done."""

    def __init__(
        self,
        transport: LeanTransport,
        request: httpx.Request,
        origin: _Origin,
        stream: trio.abc.Stream,
        reader: ResponseReader,
        read_timeout: float,
    ) -> None:
        self._transport = transport
        self._request = request
        self._origin = origin
        self._stream: trio.abc.Stream | None = stream
        self._reader = reader
        self._read_timeout = read_timeout
        self._stash = memoryview(b"")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader, request = self._reader, self._request
        while self._stream is not None:
            with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                event = reader.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                with _mapped(request, httpx.ReadTimeout, httpx.ReadError):
                    with trio.fail_after(self._read_timeout):
                        chunk = await self._stream.receive_some(reader.read_hint(READ_SIZE))
                with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                    reader.receive_data(bytes(chunk))  # no copy: it is bytes already
        raise httpx.ReadError("response closed", request=request)

    async def receive_into(self, buffer: memoryview) -> int:
        """Read body bytes straight into ``buffer``; 0 at the end of the body.

        The fast path for big bodies: one copy, kernel to ``buffer``, and no allocation.
        Do not mix with iterating the body.
        """
        reader, request = self._reader, self._request
        while self._stream is not None:
            if self._stash:  # a Data event larger than the caller's buffer
                n = min(len(buffer), len(self._stash))
                buffer[:n] = self._stash[:n]
                self._stash = self._stash[n:]
                return n
            with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                event = reader.next_event()
            if isinstance(event, h11.Data):
                self._stash = memoryview(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                return 0
            sock = _socket_of(self._stream)
            if not reader.passthrough or sock is None:  # chunked, TLS: h11 or a copy
                with _mapped(request, httpx.ReadTimeout, httpx.ReadError):
                    with trio.fail_after(self._read_timeout):
                        chunk = await self._stream.receive_some(reader.read_hint(READ_SIZE))
                with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                    reader.receive_data(bytes(chunk))
                continue
            with _mapped(request, httpx.ReadTimeout, httpx.ReadError):
                with trio.fail_after(self._read_timeout):
                    n = await sock.recv_into(buffer, reader.read_hint(len(buffer)))
            with _mapped(request, httpx.ReadTimeout, httpx.RemoteProtocolError):
                reader.consumed(n)
            if n:
                return n
        raise httpx.ReadError("response closed", request=request)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._reader.reusable and self._transport._checkin(self._origin, stream):
            return
        await trio.aclose_forcefully(stream)


@contextlib.contextmanager
def _mapped(
    request: httpx.Request,
    timeout: type[httpx.TimeoutException],
    other: type[httpx.TransportError],
) -> Iterator[None]:
    """trio/h11/OS failures as the httpx exceptions httpcore would raise."""
    try:
        yield
    except trio.TooSlowError as exc:
        raise timeout(f"{timeout.__name__} on {request.url.host}", request=request) from exc
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
        if isinstance(exc, h11.ProtocolError):
            other = httpx.RemoteProtocolError
        raise other(f"{type(exc).__name__}: {exc}", request=request) from exc


def _seconds(value: float | None) -> float:
    return math.inf if value is None else value


def _default_port(request: httpx.Request) -> int:
    return 443 if request.url.scheme == "https" else 80


def _looks_alive(stream: trio.abc.Stream) -> bool:
    """False if an idle connection was closed by the server (or holds stray bytes)."""
    sock = _socket_of(stream)
    if sock is None:
        return True  # TLS: trust it; a dead one fails before the response and is retried
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return not poll.poll(0)  # an idle keep-alive connection has nothing to read


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def _close_now(stream: trio.abc.Stream) -> None:
    sock = _socket_of(stream)
    if sock is not None:
        sock.close()
