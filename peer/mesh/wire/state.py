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

Request bookkeeping (pipelining limits, matching pieces to requests) lives in
:mod:`~peer.mesh.wire.connection`; this table only orders message kinds.
"""

from __future__ import annotations

import enum
from typing import Final

from peer.mesh.wire.messages import Goodbye, Handshake, Message

__all__ = ["Kind", "State", "next_state"]


class State(enum.Enum):
    """Where one side of the link is."""

    HANDSHAKE = "HANDSHAKE"  # nothing sent yet
    OPEN = "OPEN"
    CLOSED = "CLOSED"  # said Goodbye, or (their side) reached EOF
    ERROR = "ERROR"


class Kind(enum.Enum):
    """What the table distinguishes: the two special messages, everything else, EOF."""

    HANDSHAKE = "handshake"
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


def kind_of(message: Message) -> Kind:
    """Classify a message for the table."""
    if isinstance(message, Handshake):
        return Kind.HANDSHAKE
    if isinstance(message, Goodbye):
        return Kind.GOODBYE
    return Kind.OTHER


def next_state(state: State, kind: Kind) -> State | None:
    """The state after ``kind`` in ``state``, or None if the pair is illegal."""
    return _TABLE.get((state, kind))
