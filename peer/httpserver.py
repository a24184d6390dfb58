"""A small HTTP/1.1 server: h11 for the protocol, trio for I/O, ``sendfile`` for cached blobs.

Why not an ASGI server here: the node's data path serves multi-GiB layers from disk, and an
ASGI app must copy every byte through Python (``http.response.body`` messages). With h11's
``send_with_data_passthrough`` a response body can be a :class:`FileBody`, which we hand to
``os.sendfile`` so the kernel copies page cache to socket (h11 docs, "Support for sendfile()").
The tracker's control plane, where this does not matter, runs as an ASGI app under hypercorn.

Each connection: read a request head under a header timeout (slowloris), hand a
:class:`Request` to the handler, write the :class:`Response`. A streamed body that fails
half-way aborts the connection — the client sees a short read, never a complete-looking
short ``200`` (checklist E8). h11 enforces the head size cap (``MAX_HEAD``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

LOGGER = logging.getLogger(__name__)

# Request heads above this are refused with 431; registry requests are a few hundred bytes,
# but some clients send large Authorization headers (JWTs of several KiB).
MAX_HEAD: Final = 32 * 1024
# Request bodies we read at all: the node is pull-only; writes are refused without reading more.
MAX_BODY: Final = 64 * 1024
# A client has this long to send a complete request head (slowloris defence).
HEAD_TIMEOUT: Final = 20.0
# Keep-alive connections idle longer than this are closed (containerd's pool keeps them 90 s).
IDLE_TIMEOUT: Final = 75.0
RECV_SIZE: Final = 64 * 1024
# sendfile chunk: large enough to amortise the syscall, small enough to interleave tasks.
SENDFILE_CHUNK: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileBody:
    """``length`` bytes of the open file ``fd`` from ``offset``, sent with ``sendfile``."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:  # h11 counts body bytes with len()
        return self.length


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    client: str
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Body = bytes | FileBody | AsyncIterable[bytes] | AsyncIterable[FileBody]


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""
    on_close: Callable[[], None] | None = None


Handler = Callable[[Request], Awaitable[Response]]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Abort(Exception):
    """The connection must be dropped without completing the response."""


async def _sendfile(stream: trio.SocketStream, body: FileBody) -> None:
    sock = stream.socket
    offset, remaining = body.offset, body.length
    while remaining > 0:
        try:
            sent = os.sendfile(sock.fileno(), body.fd, offset, min(remaining, SENDFILE_CHUNK))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:
            raise _Abort(f"sendfile: {exc}") from exc
        if sent == 0:
            raise _Abort("file shorter than announced")
        offset += sent
        remaining -= sent
        await trio.lowlevel.checkpoint()


async def _send_file_body(stream: trio.abc.Stream, body: FileBody) -> None:
    if isinstance(stream, trio.SocketStream):
        await _sendfile(stream, body)
        return
    offset, remaining = body.offset, body.length  # memory streams in tests
    while remaining > 0:
        chunk = os.pread(body.fd, min(remaining, RECV_SIZE * 4), offset)
        if not chunk:
            raise _Abort("file shorter than announced")
        await stream.send_all(chunk)
        offset += len(chunk)
        remaining -= len(chunk)


class _Conn:
    def __init__(self, stream: trio.abc.Stream, handler: Handler, client: str) -> None:
        self.stream = stream
        self.handler = handler
        self.client = client
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def _next_event(self, timeout: float) -> h11.Event | type[h11.PAUSED]:
        with trio.fail_after(timeout):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(bytes(await self.stream.receive_some(RECV_SIZE)))
                    continue
                return event  # type: ignore[return-value]  # h11's sentinels are types

    async def _write(self, event: h11.Event) -> None:
        parts: list[object] = list(self.h11.send_with_data_passthrough(event) or [])
        for part in parts:
            if isinstance(part, FileBody):
                await _send_file_body(self.stream, part)
            else:
                assert isinstance(part, bytes | bytearray | memoryview)
                await self.stream.send_all(part)

    async def _simple(self, status: int, reason: str) -> None:
        # json.dumps, not a format string: the reason quotes the client's bytes (backslashes)
        body = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": reason}]}).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("docker-distribution-api-version", "registry/2.0"),
            ("connection", "close"),
        ]
        try:
            await self._write(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
            await self._write(h11.Data(data=body))
            await self._write(h11.EndOfMessage())
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def serve(self) -> None:
        first = True
        while True:
            try:
                event = await self._next_event(HEAD_TIMEOUT if first else IDLE_TIMEOUT)
            except h11.RemoteProtocolError as exc:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._simple(exc.error_status_hint, str(exc).replace('"', "'"))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or garbage
            first = False
            request = await self._read_request(event)
            if request is None:
                return
            try:
                keep = await self._respond(request)
            except (_Abort, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                return
            if not keep or self.h11.our_state is not h11.DONE:
                return
            try:
                if self.h11.their_state is not h11.DONE:
                    return
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, event: h11.Request) -> Request | None:
        target = event.target.decode("latin-1")
        split = urlsplit(target)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        request = Request(
            method=event.method.decode("latin-1"),
            target=target,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            client=self.client,
        )
        body = bytearray()
        try:
            while True:
                ev = await self._next_event(HEAD_TIMEOUT)
                if isinstance(ev, h11.Data):
                    body += ev.data
                    if len(body) > MAX_BODY:
                        await self._simple(413, "request body too large")
                        return None
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:
                    return None
        except (h11.RemoteProtocolError, trio.TooSlowError):
            await self._simple(400, "malformed request")
            return None
        request.body = bytes(body)
        return request

    async def _respond(self, request: Request) -> bool:
        response = await self.handler(request)
        try:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
            await self._write(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            body = response.body
            if request.method != "HEAD":
                if isinstance(body, bytes | FileBody):
                    if len(body):
                        # h11 passes a FileBody through untouched (send_with_data_passthrough)
                        await self._write(h11.Data(data=body))  # type: ignore[arg-type]
                else:
                    async for chunk in body:
                        if len(chunk):
                            await self._write(h11.Data(data=chunk))  # type: ignore[arg-type]
            await self._write(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            # The body came out shorter or longer than its Content-Length: drop the
            # connection so the client sees an error, not a truncated success.
            raise _Abort(str(exc)) from exc
        finally:
            if response.on_close is not None:
                response.on_close()
            aclose = getattr(response.body, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
        return True


async def _handle_stream(handler: Handler, stream: trio.abc.Stream) -> None:
    client = "?"
    if isinstance(stream, trio.SocketStream):
        try:
            peer = stream.socket.getpeername()
            client = f"{peer[0]}:{peer[1]}"
        except OSError:
            pass
    try:
        await _Conn(stream, handler, client).serve()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass
    except Exception:  # per-connection boundary: log and drop this connection only
        LOGGER.exception("connection from %s failed", client)
    finally:
        with trio.move_on_after(1, shield=True):
            await stream.aclose()


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0 = any free port) and serve until cancelled.

    Calls ``task_status.started(bound_port)`` once listening.
    """
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(trio.serve_listeners, partial(_handle_stream, handler), listeners)
        )
        task_status.started(bound)
