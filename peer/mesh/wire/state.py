"""The peer connection's state table.

Each side of a link (ours and theirs) has its own state, and both move by the same table.
Invariants, in the style of h11's ``_state.py``:

Rule 1 (handshake first)
    A side's first message is a :class:`Handshake`, or a :class:`Goodbye` to refuse the
    link outright. Anything else first is a protocol error.
Rule 2 (then anything)
    Once a side is ``OPEN`` it may send any message except a second Handshake.
Rule 3 (nothing after Goodbye)
    A Goodbye moves its sender to ``CLOSED``; any further message from that side is an
    error. EOF moves *their* side to ``CLOSED`` from any non-error state.
Rule 4 (errors are final)
    Any protocol error, in either direction, moves *both* sides to ``ERROR``; every later
    ``send``/``receive_data``/``next_event`` fails fast.
Rule 5 (authenticated links: Auth second)
    When the link is authenticated (the cluster has a secret) a side's Handshake moves it
    to ``AUTH``, where only :class:`Auth` (to ``OPEN``) or Goodbye is legal. Without a
    secret Auth is illegal everywhere, so a node with a secret and one without refuse
    each other at the handshake whichever way round.

Request bookkeeping (pipelining limits, matching pieces to requests) lives in
:mod:`~peer.mesh.wire.connection`; this table only orders message kinds.
"""

from __future__ import annotations

import enum
from typing import Final

from peer.mesh.wire.messages import Auth, Goodbye, Handshake, Message

__all__ = ["Kind", "State", "next_state"]


class State(enum.Enum):
    """Where one side of the link is."""

    HANDSHAKE = "HANDSHAKE"  # nothing sent yet
    AUTH = "AUTH"  # handshake sent, Auth not yet (authenticated links only)
    OPEN = "OPEN"
    CLOSED = "CLOSED"  # said Goodbye, or (their side) reached EOF
    ERROR = "ERROR"


class Kind(enum.Enum):
    """What the table distinguishes: the two special messages, everything else, EOF."""

    HANDSHAKE = "handshake"
    AUTH = "auth"
    GOODBYE = "goodbye"
    OTHER = "other"
    EOF = "eof"


_TABLE: Final[dict[tuple[State, Kind], State]] = {
    (State.HANDSHAKE, Kind.HANDSHAKE): State.OPEN,  # Rule 1
    (State.HANDSHAKE, Kind.GOODBYE): State.CLOSED,  # Rule 1: refusing is allowed
    (State.HANDSHAKE, Kind.EOF): State.CLOSED,
    (State.OPEN, Kind.OTHER): State.OPEN,  # Rule 2
    (State.OPEN, Kind.GOODBYE): State.CLOSED,  # Rule 3
    (State.OPEN, Kind.EOF): State.CLOSED,
    (State.CLOSED, Kind.EOF): State.CLOSED,
}
#: Rule 5: the same table with an Auth step between Handshake and OPEN.
_AUTH_TABLE: Final[dict[tuple[State, Kind], State]] = {
    **_TABLE,
    (State.HANDSHAKE, Kind.HANDSHAKE): State.AUTH,
    (State.AUTH, Kind.AUTH): State.OPEN,
    (State.AUTH, Kind.GOODBYE): State.CLOSED,
    (State.AUTH, Kind.EOF): State.CLOSED,
}


def kind_of(message: Message) -> Kind:
    """Classify a message for the table."""
    if isinstance(message, Handshake):
        return Kind.HANDSHAKE
    if isinstance(message, Goodbye):
        return Kind.GOODBYE
    if isinstance(message, Auth):
        return Kind.AUTH
    return Kind.OTHER


def next_state(state: State, kind: Kind, *, authenticated: bool = False) -> State | None:
    """The state after ``kind`` in ``state``, or None if the pair is illegal.

    ``authenticated`` selects Rule 5's table (the link requires Auth).
    """
    return (_AUTH_TABLE if authenticated else _TABLE).get((state, kind))
