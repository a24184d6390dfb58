"""Length-prefixed frames: the only thing the peer wire trusts before decoding.

Every frame on the P2P port is::

    +----------------+----------------+--------------------+---------------------+
    | length: u32 BE | hlen: u16 BE   | header: hlen bytes | trailer: the rest   |
    +----------------+----------------+--------------------+---------------------+
      counts everything after itself     one msgpack array    raw bytes (piece data)

The length prefix is checked against the receiver's cap as soon as its four bytes arrive,
before a single byte of the frame is buffered past the cap or handed to msgpack (compare
Kraken's 4-byte length + protobuf, whose piece payload also follows the header raw). The
trailer is sliced straight out of the receive buffer, so a 16 MiB piece is copied once and
never walks through the msgpack decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from peer.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["MAX_HEADER", "PREFIX_SIZE", "Frame", "FrameBuffer", "encode_frame"]

_PREFIX: Final = struct.Struct(">IH")
#: Bytes before the header: the u32 frame length and the u16 header length.
PREFIX_SIZE: Final = _PREFIX.size
#: The u16 header length caps every msgpack header at 64 KiB; our largest header, a
#: bitfield of 16,384 pieces, weighs about 2 KiB.
MAX_HEADER: Final = 0xFFFF
_HLEN_SIZE: Final = 2
_LEN_SIZE: Final = PREFIX_SIZE - _HLEN_SIZE


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: the msgpack ``header`` and the raw ``trailer`` (empty unless a piece)."""

    header: bytes
    trailer: bytes = b""


def encode_frame(header: bytes, trailer: bytes = b"") -> bytes:
    """Frame ``header`` and ``trailer`` for the wire.

    Args:
        header: The packed msgpack header (at most :data:`MAX_HEADER` bytes).
        trailer: Raw bytes sent after the header, e.g. piece data.

    Returns:
        The prefix, header and trailer joined (the trailer is copied exactly once).

    Raises:
        LocalProtocolError: The header or the whole frame is too large to be framed.
    """
    if len(header) > MAX_HEADER:
        raise LocalProtocolError(f"header of {len(header)} bytes exceeds {MAX_HEADER}")
    length = _HLEN_SIZE + len(header) + len(trailer)
    if length > 0xFFFFFFFF:
        raise LocalProtocolError(f"frame of {length} bytes cannot be length-prefixed")
    return b"".join((_PREFIX.pack(length, len(header)), header, trailer))


class FrameBuffer:
    """Accumulates received bytes and cuts them into :class:`Frame` values.

    Args:
        max_frame: The largest frame (counted after the length prefix) we accept; a
            longer length prefix is refused before the frame's body is buffered.
    """

    def __init__(self, *, max_frame: int) -> None:
        if max_frame < _HLEN_SIZE:
            raise ValueError(f"max_frame must be at least {_HLEN_SIZE}")
        self._buf = bytearray()
        self._max_frame = max_frame

    def __len__(self) -> int:
        """Bytes buffered but not yet returned as frames."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes (amortised O(len(data)); no parsing happens here)."""
        self._buf += data

    def next_frame(self) -> Frame | None:
        """Cut the next complete frame off the buffer.

        Returns:
            The frame, or None when more bytes are needed.

        Raises:
            RemoteProtocolError: The length prefix exceeds ``max_frame`` or is too short
                to hold the header length, or the header length overruns the frame.
        """
        if len(self._buf) < _LEN_SIZE:
            return None
        (length,) = struct.unpack_from(">I", self._buf)
        if length > self._max_frame:
            raise RemoteProtocolError(f"frame of {length} bytes exceeds limit {self._max_frame}")
        if length < _HLEN_SIZE:
            raise RemoteProtocolError(f"frame of {length} bytes has no header length")
        end = _LEN_SIZE + length
        if len(self._buf) < end:
            return None
        _, hlen = _PREFIX.unpack_from(self._buf)
        if _HLEN_SIZE + hlen > length:
            raise RemoteProtocolError(f"header of {hlen} bytes overruns frame of {length}")
        split = PREFIX_SIZE + hlen
        with memoryview(self._buf) as view:
            frame = Frame(bytes(view[PREFIX_SIZE:split]), bytes(view[split:end]))
        # Deleting from the front of a bytearray is amortised O(1) in CPython (it moves
        # the start pointer), so a stream of small frames stays linear overall.
        del self._buf[:end]
        return frame
