"""Sans-IO reader for one HTTP/1.1 response whose body may be large: h11 for the head only.

Theory of operation. h11 frames a body by copying every byte into its receive buffer and
out again as ``Data`` events (``h11/_receivebuffer.py``): two copies and a bytearray shift
per read, which ``py-spy`` showed as an eighth of a cold pull's event-loop time at
hundreds of MB/s. A blob body almost always has a ``Content-Length`` (the OCI distribution
spec requires it on a ``GET`` of a blob), so once h11 has parsed the head, a
:class:`ResponseReader` counts the body bytes itself and passes them through untouched;
:meth:`ResponseReader.read_hint` tells the shell how much it may read without running past
the body, so a pooled connection never swallows a byte of the next response; a shell that
reads straight into its own buffer (``recv_into``) reports the count with
:meth:`ResponseReader.consumed`. Chunked and close-delimited bodies, rare here, stay with h11.

Events are h11's own (``h11.Response``, ``h11.Data``, ``h11.EndOfMessage``, ``h11.NEED_DATA``),
in h11's order. Errors are h11's: :class:`h11.RemoteProtocolError` for a peer's fault (a body
cut short, bytes past its end), :class:`h11.LocalProtocolError` for misuse. Like h11,
``receive_data(b"")`` means end of file, and after an error every call raises again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NoReturn

import h11

# Response heads above this are refused: registries send well under 4 KiB; object stores
# behind redirects add a few headers more. h11's own default is 16 KiB.
MAX_HEAD: Final = 64 * 1024

Event = h11.Response | h11.Data | h11.EndOfMessage | type[h11.NEED_DATA]


class ResponseReader:
    """One request/response exchange on a client connection (see the module docstring).

    Args:
        max_head: Largest response head accepted.
    """

    def __init__(self, *, max_head: int = MAX_HEAD) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self._method = b""
        self._remaining: int | None = None  # body bytes still due, when we frame the body
        self._pending: list[bytes] = []
        self._eof = False
        self._done = False
        self._error: h11.RemoteProtocolError | None = None
        self._keep_alive = False

    def request(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> bytes:
        """The bytes of a body-less request; call once, first."""
        self._method = method
        head = self._h11.send(h11.Request(method=method, target=target, headers=list(headers)))
        end = self._h11.send(h11.EndOfMessage())
        return (head or b"") + (end or b"")

    @property
    def passthrough(self) -> bool:
        """Whether the body is framed by its ``Content-Length`` here rather than by h11."""
        return self._remaining is not None

    @property
    def reusable(self) -> bool:
        """The response is complete and the connection may carry another request."""
        return self._done and self._keep_alive and self._error is None

    def read_hint(self, cap: int) -> int:
        """How many bytes the shell may read now (at most ``cap``) without passing the body."""
        if self._remaining is None:
            return cap
        return min(cap, self._remaining - sum(map(len, self._pending)))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the connection; ``b""`` means the peer closed it."""
        self._check()
        if self._eof and data:
            raise h11.LocalProtocolError("data received after end of file")
        if self._remaining is None:
            self._h11.receive_data(data)
            self._eof = not data
            return
        if not data:
            self._eof = True
            return
        due = self._remaining - sum(map(len, self._pending))
        if len(data) > due:
            self._fail(f"{len(data) - due} bytes past the end of a {self._method.decode()} body")
        self._pending.append(data)

    def consumed(self, nbytes: int) -> None:
        """``nbytes`` of a passthrough body were read straight into the caller's buffer
        (``recv_into``), after every pending ``Data`` event was taken; ``0`` means end of
        file. Afterwards :meth:`next_event` says ``EndOfMessage`` or ``NEED_DATA``."""
        self._check()
        if self._remaining is None or self._pending:
            raise h11.LocalProtocolError("consumed() is for passthrough bodies, events first")
        if not nbytes:
            self.receive_data(b"")
            return
        if nbytes > self._remaining:
            self._fail(f"{nbytes - self._remaining} bytes past the end of the body")
        self._remaining -= nbytes

    def next_event(self) -> Event:
        """The next event, or ``h11.NEED_DATA``."""
        self._check()
        if self._remaining is not None:
            return self._passthrough_event()
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            self._error = exc
            raise
        if isinstance(event, h11.InformationalResponse):
            return self.next_event()  # 1xx: the real response follows
        if isinstance(event, h11.Response):
            self._start_body(event)
            return event
        if isinstance(event, h11.EndOfMessage):
            self._done = True
            states = (self._h11.our_state, self._h11.their_state)
            self._keep_alive = self._keep_alive and not self._eof and states == (h11.DONE, h11.DONE)
            return event
        if isinstance(event, h11.Data):
            return event
        if event is h11.NEED_DATA:
            return h11.NEED_DATA
        self._fail(f"unexpected {type(event).__name__} before the response ended")

    def _start_body(self, response: h11.Response) -> None:
        headers = dict(response.headers)  # h11 lower-cases names
        connection = b",".join(v for k, v in response.headers if k == b"connection")
        self._keep_alive = response.http_version == b"1.1" and b"close" not in {
            token.strip().lower() for token in connection.split(b",")
        }
        bodiless = self._method == b"HEAD" or response.status_code in (204, 304)
        length = headers.get(b"content-length")
        if bodiless or b"transfer-encoding" in headers or length is None:
            return  # h11 frames it
        self._remaining = int(length)  # h11 validated it
        leftover, closed = self._h11.trailing_data
        if leftover:
            self.receive_data(bytes(leftover))
        if closed:
            self.receive_data(b"")

    def _passthrough_event(self) -> Event:
        assert self._remaining is not None
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._remaining -= len(data)
            return h11.Data(data=data)
        if self._remaining == 0:
            if self._done:
                raise h11.LocalProtocolError("the response is already complete")
            self._done = True
            return h11.EndOfMessage()
        if self._eof:
            self._fail(f"body cut short: {self._remaining} bytes missing")
        return h11.NEED_DATA

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, message: str) -> NoReturn:
        self._error = h11.RemoteProtocolError(message)
        raise self._error
