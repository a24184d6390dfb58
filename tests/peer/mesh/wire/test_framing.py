"""Frame buffer: whole, byte at a time, with trailing bytes; caps before decoding."""

from __future__ import annotations

import struct

import pytest

from peer.errors import LocalProtocolError, RemoteProtocolError
from peer.mesh.wire.framing import MAX_HEADER, Frame, FrameBuffer, encode_frame

CASES = [
    (Frame(b"\x91\x01"), b"\x00\x00\x00\x04\x00\x02\x91\x01"),
    (Frame(b"hdr", b"PIECE"), b"\x00\x00\x00\x0a\x00\x03hdrPIECE"),
    (Frame(b""), b"\x00\x00\x00\x02\x00\x00"),
]


def feed_all(buf: FrameBuffer, data: bytes, *, step: int) -> list[Frame]:
    frames: list[Frame] = []
    for start in range(0, len(data), step):
        buf.feed(data[start : start + step])
        while (frame := buf.next_frame()) is not None:
            frames.append(frame)
    return frames


@pytest.mark.parametrize(("frame", "wire"), CASES)
def test_encode_is_pinned(frame: Frame, wire: bytes) -> None:
    assert encode_frame(frame.header, frame.trailer) == wire


@pytest.mark.parametrize(("frame", "wire"), CASES)
@pytest.mark.parametrize("step", [1, 2, 1000])
def test_decode_whole_and_bytewise(frame: Frame, wire: bytes, step: int) -> None:
    buf = FrameBuffer(max_frame=1 << 10)
    assert feed_all(buf, wire, step=step) == [frame]
    assert len(buf) == 0


@pytest.mark.parametrize(("frame", "wire"), CASES)
def test_trailing_bytes_stay_buffered(frame: Frame, wire: bytes) -> None:
    buf = FrameBuffer(max_frame=1 << 10)
    buf.feed(wire + wire[:5])
    assert buf.next_frame() == frame
    assert buf.next_frame() is None
    assert len(buf) == 5
    buf.feed(wire[5:])
    assert buf.next_frame() == frame


def test_many_frames_in_one_feed() -> None:
    buf = FrameBuffer(max_frame=100)
    wire = b"".join(w for _, w in CASES)
    assert feed_all(buf, wire, step=len(wire)) == [f for f, _ in CASES]


def test_oversized_length_refused_before_body_arrives() -> None:
    buf = FrameBuffer(max_frame=16)
    buf.feed(struct.pack(">I", 17))  # only the prefix: nothing else buffered yet
    with pytest.raises(RemoteProtocolError, match="exceeds limit 16"):
        buf.next_frame()


def test_frame_at_exact_cap_is_accepted() -> None:
    buf = FrameBuffer(max_frame=10)
    buf.feed(encode_frame(b"abc", b"12345"))
    assert buf.next_frame() == Frame(b"abc", b"12345")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x00\x00\x00\x01\x00", "no header length"),
        (b"\x00\x00\x00\x00", "no header length"),
        (b"\x00\x00\x00\x03\x00\x05abc", "overruns"),
    ],
)
def test_malformed_prefixes(wire: bytes, match: str) -> None:
    buf = FrameBuffer(max_frame=100)
    buf.feed(wire)
    with pytest.raises(RemoteProtocolError, match=match):
        buf.next_frame()


def test_header_too_large_to_frame() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * (MAX_HEADER + 1))


def test_trailer_is_not_a_view_of_the_buffer() -> None:
    buf = FrameBuffer(max_frame=100)
    buf.feed(encode_frame(b"h", b"data"))
    frame = buf.next_frame()
    assert frame is not None
    buf.feed(b"\xff" * 20)  # reusing the buffer must not change what we returned
    assert frame == Frame(b"h", b"data")
    assert type(frame.trailer) is bytes


def test_max_frame_must_hold_the_header_length() -> None:
    with pytest.raises(ValueError):
        FrameBuffer(max_frame=1)
