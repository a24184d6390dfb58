"""``PeerConnection``: the sans-IO state machine of one peer link, in h11's shape.

The caller moves bytes; this class decides what they mean::

    conn.receive_data(data)      # b"" means the peer closed its side (EOF)
    event = conn.next_event()    # a Message, NEED_DATA, or Closed
    data = conn.send(message)    # bytes to write (b"" if there is nothing to send)
    conn.send_failed()           # the write failed: the link is in an unknown state

Ordering rules are the table in :mod:`~peer.mesh.wire.state`. On top of it this class
keeps the request books for both directions, which is what makes pipelining safe:

* Our requests: at most ``min(max_outstanding, their Handshake.max_requests)`` at once
  and at most ``max_inflight_bytes`` requested but not yet received. Every Piece or Busy
  we receive must answer one of them (a Piece must carry exactly the requested length);
  a reply to a request we cancelled is discarded silently, since Cancel races the reply.
* Their requests: at most the ``max_requests`` we advertised in our Handshake. Every
  Piece or Busy we send must answer one of them; a reply to a request they cancelled is
  swallowed (``send`` returns ``b""``), so the serving side needs no locking against
  Cancel. Cancelling something already answered sends nothing either.

Errors: anything the peer does wrong raises :class:`RemoteProtocolError`, anything we do
wrong :class:`LocalProtocolError`; both leave the connection in ``ERROR`` for good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from peer.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from peer.mesh.wire.framing import MAX_HEADER, PREFIX_SIZE, FrameBuffer
from peer.mesh.wire.messages import (
    MAX_PIECE_LENGTH,
    MIN_VERSION,
    PROTOCOL_VERSION,
    Busy,
    Cancel,
    Goodbye,
    Handshake,
    Message,
    Piece,
    Request,
    RequestKey,
    decode,
    encode,
)
from peer.mesh.wire.state import Kind, State, kind_of, next_state

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "DEFAULT_MAX_OUTSTANDING",
    "NEED_DATA",
    "Closed",
    "Event",
    "PeerConnection",
]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: ``next_event`` has nothing complete; call ``receive_data`` first.
NEED_DATA: Final = _Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer's side is finished: EOF, with (``clean``) or without a Goodbye first."""

    clean: bool


Event = Message | Closed | Literal[_Sentinel.NEED_DATA]

#: One full-size piece plus the largest possible header: the biggest legal frame. The
#: cap is what bounds receive-buffer memory per link (h11 caps incomplete events at 16 KiB
#: for the same reason; our unit is a piece, so the cap is a piece).
DEFAULT_MAX_FRAME: Final = MAX_PIECE_LENGTH + MAX_HEADER + PREFIX_SIZE
#: Requests we keep outstanding on one link. A 1 MiB piece takes ~1 ms at 10 Gbit/s, so
#: two in flight cover a LAN round trip; 8 leaves room for endgame duplicates and
#: matches Dragonfly's ``concurrentPieceCount`` (Kraken uses 3 per agent, 5 per origin).
DEFAULT_MAX_OUTSTANDING: Final = 8
#: Bytes requested but not yet received on one link: what a stalled peer can pin in our
#: memory. 64 MiB is 8 pieces of 8 MiB or 4 of the largest.
DEFAULT_MAX_INFLIGHT_BYTES: Final = 64 << 20
#: Keys of cancelled requests remembered so a late reply is recognised (FIFO, bounded).
_CANCEL_MEMORY: Final = 256


def _remember(memory: dict[RequestKey, None], key: RequestKey) -> None:
    memory[key] = None
    if len(memory) > _CANCEL_MEMORY:
        del memory[next(iter(memory))]


class PeerConnection:
    """One peer link's protocol state; no I/O, no clock.

    Args:
        max_frame: Largest frame accepted from the peer (see :data:`DEFAULT_MAX_FRAME`).
        max_outstanding: Cap on our own outstanding requests, on top of the peer's
            advertised ``max_requests``.
        max_inflight_bytes: Cap on the bytes our outstanding requests ask for.
    """

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    ) -> None:
        if max_outstanding < 1 or max_inflight_bytes < 1:
            raise ValueError("max_outstanding and max_inflight_bytes must be positive")
        self._frames = FrameBuffer(max_frame=max_frame)
        self._max_outstanding = max_outstanding
        self._max_inflight_bytes = max_inflight_bytes
        self.our_state = State.HANDSHAKE
        self.their_state = State.HANDSHAKE
        self.our_handshake: Handshake | None = None
        self.their_handshake: Handshake | None = None
        self._eof = False
        self._said_goodbye = False
        self._ours: dict[RequestKey, int] = {}  # our requests awaiting a reply -> length
        self._ours_bytes = 0
        self._ours_cancelled: dict[RequestKey, None] = {}
        self._theirs: dict[RequestKey, int] = {}  # their requests awaiting our reply
        self._theirs_cancelled: dict[RequestKey, None] = {}

    # ---- introspection ---------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """The version both sides speak, once the peer's handshake has arrived."""
        if self.their_handshake is None:
            return None
        return min(PROTOCOL_VERSION, self.their_handshake.version)

    @property
    def outstanding(self) -> int:
        """Our requests not yet answered (nor cancelled)."""
        return len(self._ours)

    @property
    def inflight_bytes(self) -> int:
        """Bytes our outstanding requests ask for."""
        return self._ours_bytes

    @property
    def request_slots(self) -> int:
        """How many more requests ``send`` would accept now (0 before their handshake)."""
        if self.their_handshake is None or self.our_state is not State.OPEN:
            return 0
        cap = min(self._max_outstanding, self.their_handshake.max_requests)
        return max(0, cap - len(self._ours))

    def can_request(self, length: int) -> bool:
        """Whether a Request for ``length`` bytes fits the limits now."""
        return bool(self.request_slots) and self._ours_bytes + length <= self._max_inflight_bytes

    @property
    def max_inflight_bytes(self) -> int:
        return self._max_inflight_bytes

    @property
    def peer_outstanding(self) -> int:
        """Their requests we have not answered yet."""
        return len(self._theirs)

    # ---- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Hand over bytes read from the peer; ``b""`` means EOF.

        Raises:
            RemoteProtocolError: Data after EOF, or the connection is already in ERROR.
        """
        self._check_alive(RemoteProtocolError)
        if self._eof:
            if data:
                self._fail(RemoteProtocolError(f"{len(data)} bytes of data after EOF"))
            return
        if data:
            self._frames.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event:
        """Parse the next event out of the received bytes.

        Returns:
            A message; :data:`NEED_DATA` if no complete frame is buffered; or
            :class:`Closed` once EOF is reached (and on every call after that).

        Raises:
            RemoteProtocolError: The peer broke the protocol (connection is now ERROR).
        """
        self._check_alive(RemoteProtocolError)
        try:
            while True:
                frame = self._frames.next_frame()
                if frame is None:
                    if not self._eof:
                        return NEED_DATA
                    if len(self._frames):
                        raise RemoteProtocolError(f"EOF inside a frame ({len(self._frames)} B)")
                    self._advance_theirs(Kind.EOF)
                    return Closed(clean=self._said_goodbye)
                message = decode(frame)
                if self._receive(message):
                    return message
        except RemoteProtocolError as exc:
            self._fail(exc)

    def _receive(self, message: Message) -> bool:
        """Book a received message; False if it is a stale reply to drop silently."""
        self._advance_theirs(kind_of(message))
        if isinstance(message, Handshake):
            if message.version < MIN_VERSION:
                raise RemoteProtocolError(f"peer speaks version {message.version}")
            self.their_handshake = message
        elif isinstance(message, Request):
            limit = 0 if self.our_handshake is None else self.our_handshake.max_requests
            if message.key in self._theirs:
                raise RemoteProtocolError(f"duplicate request for piece {message.index}")
            if len(self._theirs) >= limit:
                raise RemoteProtocolError(f"more than {limit} requests outstanding")
            self._theirs[message.key] = message.length
        elif isinstance(message, Piece | Busy):
            length = self._ours.pop(message.key, None)
            if length is None:
                if message.key in self._ours_cancelled:
                    return False  # it crossed our Cancel on the wire
                raise RemoteProtocolError(f"unrequested {type(message).__name__} {message.index}")
            self._ours_bytes -= length
            if isinstance(message, Piece) and len(message.data) != length:
                raise RemoteProtocolError(f"piece of {len(message.data)} B, asked {length}")
        elif isinstance(message, Cancel):
            if self._theirs.pop(message.key, None) is not None:
                _remember(self._theirs_cancelled, message.key)
        elif isinstance(message, Goodbye):
            self._said_goodbye = True
        return True

    # ---- sending ---------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Book ``message`` as sent and return its bytes.

        Returns:
            The frame to write, or ``b""`` for a reply to a request the peer cancelled
            and for a Cancel of a request already answered.

        Raises:
            LocalProtocolError: The message is illegal now (connection is now ERROR).
        """
        self._check_alive(LocalProtocolError)
        try:
            if not self._book_send(message):
                return b""
        except LocalProtocolError as exc:
            self._fail(exc)
        return encode(message)

    def _book_send(self, message: Message) -> bool:
        new = next_state(self.our_state, kind_of(message))
        if new is None:
            raise LocalProtocolError(f"cannot send {type(message).__name__} in {self.our_state}")
        if isinstance(message, Handshake):
            self.our_handshake = message
        elif isinstance(message, Request):
            if message.key in self._ours:
                raise LocalProtocolError(f"piece {message.index} is already requested")
            if not self.request_slots:
                raise LocalProtocolError("no request slot free (or no handshake from the peer)")
            if self._ours_bytes + message.length > self._max_inflight_bytes:
                raise LocalProtocolError(f"more than {self._max_inflight_bytes} B in flight")
            self._ours[message.key] = message.length
            self._ours_bytes += message.length
        elif isinstance(message, Piece | Busy):
            length = self._theirs.get(message.key)
            if length is None:
                if message.key in self._theirs_cancelled:
                    return False
                raise LocalProtocolError(f"reply to piece {message.index} nobody asked for")
            if isinstance(message, Piece) and len(message.data) != length:
                raise LocalProtocolError(f"piece of {len(message.data)} B, asked {length}")
            del self._theirs[message.key]
        elif isinstance(message, Cancel):
            length = self._ours.pop(message.key, None)
            if length is None:
                return False
            self._ours_bytes -= length
            _remember(self._ours_cancelled, message.key)
        self.our_state = new
        return True

    def send_failed(self) -> None:
        """The bytes from ``send`` could not be written: the link is unusable."""
        self.our_state = self.their_state = State.ERROR

    # ---- internals -------------------------------------------------------------------

    def _advance_theirs(self, kind: Kind) -> None:
        new = next_state(self.their_state, kind)
        if new is None:
            raise RemoteProtocolError(f"peer sent {kind.value} in {self.their_state.value}")
        self.their_state = new

    def _check_alive(self, error: type[ProtocolError]) -> None:
        if State.ERROR in (self.our_state, self.their_state):
            raise error("connection is in ERROR state")

    def _fail(self, exc: ProtocolError) -> NoReturn:
        self.our_state = self.their_state = State.ERROR
        raise exc
