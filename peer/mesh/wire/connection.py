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

Authenticated links (``keys`` given, Rule 5 of the state table): after the handshakes
each side sends :class:`Auth` (:meth:`PeerConnection.auth` builds ours), and the peer's is
verified on arrival (:mod:`~peer.mesh.wire.auth`). Until it has been, nothing but the
peer's Handshake and Auth is accepted, and we may send nothing but ours: no Request is
served and no Bitfield leaks to a node that does not know the secret.

Errors: anything the peer does wrong raises :class:`RemoteProtocolError`, anything we do
wrong :class:`LocalProtocolError`; both leave the connection in ``ERROR`` for good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, NoReturn

from peer.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from peer.mesh.wire.auth import make_auth, verify_auth
from peer.mesh.wire.framing import MAX_HEADER, PREFIX_SIZE, FrameBuffer
from peer.mesh.wire.messages import (
    MAX_PIECE_LENGTH,
    MIN_NONCE,
    MIN_VERSION,
    PROTOCOL_VERSION,
    Auth,
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

if TYPE_CHECKING:
    from tracker.auth import ClusterKeys

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
        keys: The cluster secret(s); when given the link is authenticated (Rule 5).
        dialer: We opened the transport (the Auth MACs name each side's role).
    """

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        keys: ClusterKeys | None = None,
        dialer: bool = False,
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
        self._keys = keys
        self._dialer = dialer
        #: The peer proved it knows the cluster secret (always False without one).
        self.authenticated = False
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
    def requires_auth(self) -> bool:
        """Whether this link is authenticated with the cluster secret (Rule 5)."""
        return self._keys is not None

    @property
    def ready(self) -> bool:
        """Whether the peer's handshake (and, when required, its Auth) has arrived."""
        return self.their_handshake is not None and (self.authenticated or self._keys is None)

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
        if not self.ready or self.our_state is not State.OPEN:
            return 0
        assert self.their_handshake is not None
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
        elif isinstance(message, Auth):
            assert self._keys is not None  # the table refuses Auth on open links
            if self.our_handshake is None or self.their_handshake is None:
                raise RemoteProtocolError("Auth before our handshake was sent")
            verify_auth(
                self._keys, message, ours=self.our_handshake, theirs=self.their_handshake,
                dialer=self._dialer,
            )  # fmt: skip
            self.authenticated = True
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

    def auth(self) -> Auth:
        """Our Auth for this link, once both handshakes are known.

        Raises:
            LocalProtocolError: The link is not authenticated, or a handshake is missing.
        """
        if self._keys is None or self.our_handshake is None or self.their_handshake is None:
            raise LocalProtocolError("Auth needs a cluster secret and both handshakes")
        return make_auth(
            self._keys, ours=self.our_handshake, theirs=self.their_handshake, dialer=self._dialer
        )

    def _book_send(self, message: Message) -> bool:
        kind = kind_of(message)
        new = next_state(self.our_state, kind, authenticated=self._keys is not None)
        if new is None:
            raise LocalProtocolError(f"cannot send {type(message).__name__} in {self.our_state}")
        if kind is Kind.OTHER and self._keys is not None and not self.authenticated:
            raise LocalProtocolError(
                f"cannot send {type(message).__name__} before the peer has authenticated"
            )
        if isinstance(message, Handshake):
            if self._keys is not None and len(message.nonce) < MIN_NONCE:
                raise LocalProtocolError(f"our nonce must have at least {MIN_NONCE} bytes")
            self.our_handshake = message
        elif isinstance(message, Auth):
            if message != self.auth():
                raise LocalProtocolError("Auth does not match this link's handshakes")
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
        new = next_state(self.their_state, kind, authenticated=self._keys is not None)
        if new is None:
            if kind is Kind.AUTH and self._keys is None:
                raise RemoteProtocolError(
                    "peer authenticates with a cluster secret and this node has none"
                )
            if self.their_state is State.AUTH:
                raise RemoteProtocolError(
                    f"peer sent {kind.value} instead of authenticating "
                    "(it has no --cluster-secret?)"
                )
            raise RemoteProtocolError(f"peer sent {kind.value} in {self.their_state.value}")
        self.their_state = new

    def _check_alive(self, error: type[ProtocolError]) -> None:
        if State.ERROR in (self.our_state, self.their_state):
            raise error("connection is in ERROR state")

    def _fail(self, exc: ProtocolError) -> NoReturn:
        self.our_state = self.their_state = State.ERROR
        raise exc
