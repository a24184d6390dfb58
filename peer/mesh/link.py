"""One peer link over any ``trio.abc.Stream``: the thin trio shell around PeerConnection.

Theory of operation
-------------------
``PeerLink.run`` owns the stream for the link's whole life, in one nursery:

* **One writer task** drains an unbounded outbox of already-encoded frames. Every message
  is booked by ``PeerConnection.send`` synchronously, in the caller's task, and queued in
  the same step, so the order of frames on the wire is the order of ``send`` calls and a
  Cancel can be queued from a ``finally`` block without awaiting. Producers of big frames
  (``send``) wait while more than ``high_water`` bytes are queued; small control frames
  (``send_nowait``: Cancel, Busy, Have) never wait. Any failure of ``send_all``,
  cancellation included, calls ``conn.send_failed()`` and ends the link (h11's rule).
* **One reader** (the nursery body) feeds received bytes to the connection and routes
  events: Piece/Busy wake the ``request`` call waiting for them, Request starts a serving
  task (cancelled by the peer's Cancel), Cancel also cancels it, everything else
  (Bitfield, Have, Interested, Goodbye) goes out on the ``events`` channel, whose bounded
  buffer pushes back on the reader and so on the peer.
* **Handshake first**: ``run`` sends ours, waits up to ``handshake_timeout`` for theirs,
  and reports it through ``task_status.started``. On an authenticated link (the
  connection has the cluster keys) it answers their handshake with our ``Auth`` and
  reports nothing until theirs has been verified, so no caller can send or serve anything
  to a peer that has not proved it knows the cluster secret.
* **Errors** of any task end the whole link and are re-raised by ``run`` as they are
  (``RemoteProtocolError``, ``trio.BrokenResourceError``, ``trio.TooSlowError``, ...), not
  wrapped in an exception group. Pending ``request`` calls then raise
  ``trio.BrokenResourceError``.

Timeouts of single requests belong to the caller (``with trio.fail_after(...)``); a
request abandoned that way is cancelled on the wire. Upload and download token buckets,
if given, meter every byte written and read.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from peer.errors import LocalProtocolError
from peer.mesh.ratelimit import CHUNK, TokenBucket, acquire
from peer.mesh.wire.connection import NEED_DATA, Closed, PeerConnection
from peer.mesh.wire.messages import (
    Auth,
    Busy,
    Cancel,
    Goodbye,
    Handshake,
    Message,
    Piece,
    Request,
    RequestKey,
)
from peer.mesh.wire.state import State

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "PeerLink", "ServePiece"]

LOGGER = logging.getLogger(__name__)

#: Serves one request: the requested bytes, or None to answer Busy.
ServePiece = Callable[[Request], Awaitable[bytes | None]]

#: Kraken's handshake timeout; a live peer on a LAN answers in milliseconds.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0
#: Queued bytes beyond which ``send`` waits: one largest piece, so a link never holds
#: more than about two pieces of ours in memory.
DEFAULT_HIGH_WATER: Final = 16 << 20
#: Largest single read; matches the rate limiter's chunk.
MAX_RECV: Final = CHUNK


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Piece | Busy | None = None


class PeerLink:
    """One link to one peer.

    Consume ``events`` in a task of its own: the reader waits while that channel is
    full, and it is also the reader that delivers the answers ``request`` waits for.

    Args:
        stream: The transport (a TCP stream in production, memory streams in tests).
        hello: Our handshake (its ``max_requests`` bounds how many requests we serve).
        events: Where Bitfield, Have, Interested and Goodbye messages go; closed when
            the link ends.
        serve: Answers the peer's requests; None answers every request with Busy.
        conn: The protocol state (a default ``PeerConnection`` if omitted).
        upload: Token bucket metering bytes we write, or None.
        download: Token bucket metering bytes we read, or None.
        handshake_timeout: Seconds to wait for the peer's handshake.
        busy_retry_after: ``retry_after`` we put in Busy answers.
        high_water: Queued bytes beyond which ``send`` waits for the writer.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        hello: Handshake,
        *,
        events: trio.MemorySendChannel[Message],
        serve: ServePiece | None = None,
        conn: PeerConnection | None = None,
        upload: TokenBucket | None = None,
        download: TokenBucket | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        busy_retry_after: float = 1.0,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self.conn = conn or PeerConnection()
        self._stream = stream
        self._hello = hello
        self._events = events
        self._serve = serve
        self._upload = upload
        self._download = download
        self._handshake_timeout = handshake_timeout
        self._busy_retry_after = busy_retry_after
        self._high_water = high_water
        self._outbox, self._outbox_recv = trio.open_memory_channel[bytes](math.inf)
        self._queued = 0
        self._space = trio.lowlevel.ParkingLot()  # writer drained some bytes
        self._slots = trio.lowlevel.ParkingLot()  # a request slot may be free
        self._waiters: dict[RequestKey, _Waiter] = {}
        self._serving: dict[RequestKey, trio.CancelScope] = {}
        self._scope = trio.CancelScope()
        self._closing = False
        self._finished = False
        self._done = trio.Event()
        self._error: Exception | None = None

    @property
    def their_handshake(self) -> Handshake | None:
        return self.conn.their_handshake

    def statistics(self) -> dict[str, int]:
        """Cheap counters for logs and metrics."""
        return {
            "queued_bytes": self._queued,
            "outstanding": self.conn.outstanding,
            "serving": len(self._serving),
        }

    # ---- life cycle ----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Handshake] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the link until either side closes it; ``started`` with their Handshake.

        Raises:
            RemoteProtocolError: The peer broke the protocol.
            trio.TooSlowError: No handshake within ``handshake_timeout``.
            trio.BrokenResourceError: The stream broke, or the peer left before its handshake.
        """
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._guarded, self._writer)
                    try:
                        self.send_nowait(self._hello)
                        with trio.fail_after(self._handshake_timeout):
                            theirs = await self._handshake()
                        task_status.started(theirs)
                        await self._reader()
                    except Exception as exc:  # every link error ends this link only
                        self._fail(exc)
                    nursery.cancel_scope.cancel()
        finally:
            self._finish()
            self._events.close()
            await trio.aclose_forcefully(self._stream)
        if self._error is not None:
            raise self._error

    def close(self, reason: str = "") -> None:
        """Say Goodbye: queued frames are flushed, then our side of the stream is closed.

        ``run`` returns when the peer closes its side; bound that with a timeout and
        :meth:`abort` if you cannot wait.
        """
        if self._closing or self._finished:
            return
        self.send_nowait(Goodbye(reason=reason))
        self._closing = True
        self._outbox.close()

    def abort(self) -> None:
        """End the link now, without flushing."""
        self._scope.cancel()

    async def wait_closed(self) -> None:
        """Wait until ``run`` has finished."""
        await self._done.wait()

    # ---- sending -------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Queue ``message``, first waiting while the outbox is above its high-water mark."""
        await trio.lowlevel.checkpoint()
        while self._queued > self._high_water and not self._finished:
            await self._space.park()
        self.send_nowait(message)

    def send_nowait(self, message: Message) -> None:
        """Book and queue ``message`` now, whatever the outbox holds (for small frames).

        Raises:
            trio.BrokenResourceError: The link has ended, or is ending: its connection is
                in ERROR (a protocol error the reader has not finished reporting yet).
            trio.ClosedResourceError: We said Goodbye already.
            LocalProtocolError: ``message`` is illegal now (a bug; the link is poisoned).
        """
        if self._finished or self.conn.our_state is State.ERROR:
            raise trio.BrokenResourceError("link has ended")
        if self._closing:
            raise trio.ClosedResourceError("link is closing")
        data = self.conn.send(message)
        if data:
            self._queued += len(data)
            self._outbox.send_nowait(data)

    async def request(self, request: Request) -> Piece | Busy:
        """Ask for a piece and wait for the answer (bound it with ``trio.fail_after``).

        Waits first for the peer's handshake and for a request slot (the peer's
        ``max_requests`` and our in-flight byte cap), so callers may simply pipeline.
        If the wait is cancelled or times out, the request is cancelled on the wire.

        Raises:
            trio.BrokenResourceError: The link ended before the answer came.
            trio.BusyResourceError: The same piece range is already being requested.
            LocalProtocolError: ``request.length`` can never fit the in-flight byte cap.
        """
        if request.length > self.conn.max_inflight_bytes:
            raise LocalProtocolError(f"request of {request.length} B exceeds the in-flight cap")
        if request.key in self._waiters:
            raise trio.BusyResourceError(f"piece {request.index} is already being requested")
        waiter = self._waiters[request.key] = _Waiter()
        try:
            while not (self._finished or self._closing or self.conn.can_request(request.length)):
                await self._slots.park()
            self.send_nowait(request)  # no checkpoint between the slot check and booking
            await waiter.event.wait()
        finally:
            if self._waiters.get(request.key) is waiter:
                del self._waiters[request.key]
                if not (self._finished or self._closing) and self.conn.our_state is State.OPEN:
                    self._slots.unpark_all()
                    self.send_nowait(
                        Cancel(digest=request.digest, index=request.index, offset=request.offset)
                    )
        if waiter.reply is None:
            raise trio.BrokenResourceError("link ended while waiting for a piece")
        return waiter.reply

    # ---- tasks ---------------------------------------------------------------------------

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except Exception as exc:  # every link error ends this link only
            self._fail(exc)

    async def _writer(self) -> None:
        flushed = False
        try:
            async for data in self._outbox_recv:
                if self._upload is None:
                    await self._stream.send_all(data)
                else:
                    with memoryview(data) as view:
                        for start in range(0, len(view), CHUNK):
                            await acquire(self._upload, len(view[start : start + CHUNK]))
                            await self._stream.send_all(view[start : start + CHUNK])
                self._queued -= len(data)
                self._space.unpark_all()
            flushed = True
        finally:
            if not flushed:  # bytes may be half written: the stream is unusable
                self.conn.send_failed()
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def _receive(self) -> None:
        data = await self._stream.receive_some(MAX_RECV)
        if data and self._download is not None:
            await acquire(self._download, len(data))
        self.conn.receive_data(data)

    async def _handshake(self) -> Handshake:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                await self._receive()
            elif isinstance(event, Handshake) and self.conn.requires_auth:
                self.send_nowait(self.conn.auth())
            elif isinstance(event, Handshake | Auth):  # Auth: verified by the connection
                theirs = self.conn.their_handshake
                assert theirs is not None
                self._slots.unpark_all()
                return theirs
            else:  # Closed, or a Goodbye refusing us (the state table allows nothing else)
                reason = event.reason if isinstance(event, Goodbye) else "EOF"
                raise trio.BrokenResourceError(f"peer left before its handshake: {reason!r}")

    async def _reader(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                await self._receive()
            elif isinstance(event, Closed):
                return
            elif isinstance(event, Piece | Busy):
                self._slots.unpark_all()
                waiter = self._waiters.pop(event.key, None)
                if waiter is not None:
                    waiter.reply = event
                    waiter.event.set()
            elif isinstance(event, Request):
                if self._closing:
                    continue  # we said Goodbye: nothing more goes out
                if self._serve is None:
                    self._answer_busy(event)
                else:
                    self._nursery.start_soon(
                        self._guarded, functools.partial(self._serve_one, event)
                    )
            else:
                if (
                    isinstance(event, Cancel)
                    and (scope := self._serving.get(event.key)) is not None
                ):
                    scope.cancel()
                await self._events.send(event)

    async def _serve_one(self, request: Request) -> None:
        assert self._serve is not None
        with trio.CancelScope() as scope:
            self._serving[request.key] = scope
            try:
                try:
                    data = await self._serve(request)
                except Exception:  # a failed read answers Busy, it does not end the link
                    LOGGER.exception("serving piece %d failed", request.index)
                    data = None
                if self._closing or self._finished:
                    return
                if data is not None and len(data) != request.length:
                    LOGGER.error(
                        "serving piece %d: %d bytes, asked %d",
                        request.index,
                        len(data),
                        request.length,
                    )
                    data = None
                if data is None:
                    self._answer_busy(request)
                else:
                    piece = Piece(
                        digest=request.digest, index=request.index, offset=request.offset, data=data
                    )
                    await self.send(piece)
            finally:
                if self._serving.get(request.key) is scope:
                    del self._serving[request.key]

    def _answer_busy(self, request: Request) -> None:
        self.send_nowait(
            Busy(
                digest=request.digest,
                index=request.index,
                offset=request.offset,
                retry_after=self._busy_retry_after,
            )
        )

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._scope.cancel()

    def _finish(self) -> None:
        self._finished = True
        for waiter in self._waiters.values():
            waiter.event.set()  # reply stays None: request() raises BrokenResourceError
        self._waiters.clear()
        self._space.unpark_all()
        self._slots.unpark_all()
        self._done.set()
