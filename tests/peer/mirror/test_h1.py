"""peer.mirror.h1: the response reader, fed whole, byte by byte, and with trailing bytes."""

from __future__ import annotations

from collections.abc import Iterator

import h11
import pytest

from peer.mirror.h1 import ResponseReader


def _feeds(wire: bytes) -> Iterator[list[bytes]]:
    yield [wire]
    yield [wire[i : i + 1] for i in range(len(wire))]
    yield [wire[:7], wire[7:40], wire[40:]]


def _run(wire: bytes, feed: list[bytes], *, method: bytes = b"GET", eof: bool = False) -> tuple[
    h11.Response, bytes, bool, ResponseReader
]:  # fmt: skip
    reader = ResponseReader()
    reader.request(method, b"/v2/r/blobs/x", [(b"host", b"h")])
    pending = list(feed) + ([b""] if eof else [])
    head: h11.Response | None = None
    body = bytearray()
    while True:
        event = reader.next_event()
        if event is h11.NEED_DATA:
            assert pending, "reader wants more than the wire holds"
            data = pending.pop(0)
            if data and head is not None and reader.passthrough:
                assert len(data) <= reader.read_hint(1 << 30)
            reader.receive_data(data)
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            assert isinstance(event, h11.EndOfMessage)
            assert head is not None
            return head, bytes(body), reader.passthrough, reader


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncontent-type: application/octet-stream\r\n\r\n"


@pytest.mark.parametrize("feed", list(_feeds(HEAD + b"0123456789")))
def test_content_length_body_passes_through(feed: list[bytes]) -> None:
    head, body, passthrough, reader = _run(HEAD + b"0123456789", feed)
    assert head.status_code == 200
    assert body == b"0123456789"
    assert passthrough
    assert reader.reusable
    assert reader.read_hint(100) == 0  # never read past the body


def test_request_bytes_are_a_plain_get() -> None:
    reader = ResponseReader()
    wire = reader.request(b"GET", b"/v2/r/blobs/x", [(b"host", b"h"), (b"range", b"bytes=0-9")])
    assert wire == b"GET /v2/r/blobs/x HTTP/1.1\r\nhost: h\r\nrange: bytes=0-9\r\n\r\n"


def test_read_hint_counts_down_what_is_due() -> None:
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(HEAD + b"0123")
    assert isinstance(reader.next_event(), h11.Response)
    assert reader.read_hint(100) == 6
    assert reader.read_hint(4) == 4
    assert reader.next_event() == h11.Data(data=b"0123")
    reader.receive_data(b"45")
    assert reader.read_hint(100) == 4


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"0123456789",
    ],
    ids=["chunked", "informational-first"],
)
def test_bodies_h11_frames_or_after_1xx(wire: bytes) -> None:
    for feed in _feeds(wire):
        head, body, _, reader = _run(wire, feed)
        assert (head.status_code, body) == (200, b"0123456789")
        assert reader.reusable


def test_close_delimited_body_ends_at_eof_and_is_not_reusable() -> None:
    wire = b"HTTP/1.1 200 OK\r\n\r\n0123456789"
    for feed in _feeds(wire):
        _, body, passthrough, reader = _run(wire, feed, eof=True)
        assert body == b"0123456789"
        assert not passthrough
        assert not reader.reusable


@pytest.mark.parametrize(
    ("wire", "reusable"),
    [
        (HEAD.replace(b"\r\n\r\n", b"\r\nconnection: keep-alive, Close\r\n\r\n"), False),
        (HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
        (HEAD, True),
    ],
)
def test_keep_alive_follows_the_response(wire: bytes, reusable: bool) -> None:
    *_, reader = _run(wire + b"0123456789", [wire + b"0123456789"])
    assert reader.reusable is reusable


def test_head_and_304_have_no_body() -> None:
    head, body, _, reader = _run(HEAD, [HEAD], method=b"HEAD")
    assert (head.status_code, body) == (200, b"")
    assert reader.reusable
    wire = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"
    head, body, *_ = _run(wire, [wire])
    assert (head.status_code, body) == (304, b"")


@pytest.mark.parametrize("cut", [0, 1, 9])
def test_body_cut_short_is_a_remote_error(cut: int) -> None:
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(HEAD + b"0123456789"[:cut])
    assert isinstance(reader.next_event(), h11.Response)
    if cut:
        assert isinstance(reader.next_event(), h11.Data)
    assert reader.next_event() is h11.NEED_DATA
    reader.receive_data(b"")
    with pytest.raises(h11.RemoteProtocolError, match="cut short"):
        reader.next_event()
    with pytest.raises(h11.RemoteProtocolError):  # and every later call
        reader.receive_data(b"x")
    assert not reader.reusable


@pytest.mark.parametrize("split", [len(HEAD), len(HEAD) + 10])
def test_bytes_past_the_body_are_a_remote_error(split: int) -> None:
    wire = HEAD + b"0123456789" + b"HTTP/1.1 200 OK\r\n"
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(wire[:split])
    assert isinstance(reader.next_event(), h11.Response)
    if split > len(HEAD):
        assert reader.next_event() == h11.Data(data=b"0123456789")
    with pytest.raises(h11.RemoteProtocolError, match="past the end"):
        reader.receive_data(wire[split:])
    assert not reader.reusable


def test_malformed_head_is_a_remote_error() -> None:
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        reader.next_event()
    with pytest.raises(h11.RemoteProtocolError):
        reader.next_event()


def test_head_over_the_limit_is_refused() -> None:
    reader = ResponseReader(max_head=1024)
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(b"HTTP/1.1 200 OK\r\nx: " + b"y" * 2048)
    with pytest.raises(h11.RemoteProtocolError):
        reader.next_event()


def test_data_after_eof_is_our_bug() -> None:
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(HEAD)
    assert isinstance(reader.next_event(), h11.Response)
    reader.receive_data(b"")
    with pytest.raises(h11.LocalProtocolError):
        reader.receive_data(b"x")


def test_bytes_read_into_the_callers_buffer_are_counted() -> None:
    reader = ResponseReader()
    reader.request(b"GET", b"/", [(b"host", b"h")])
    reader.receive_data(HEAD + b"012")
    assert isinstance(reader.next_event(), h11.Response)
    with pytest.raises(h11.LocalProtocolError):
        reader.consumed(3)  # the pending Data event comes first
    assert reader.next_event() == h11.Data(data=b"012")
    assert reader.next_event() is h11.NEED_DATA
    assert reader.read_hint(1 << 20) == 7
    reader.consumed(4)
    assert reader.next_event() is h11.NEED_DATA
    reader.consumed(3)
    assert reader.next_event() == h11.EndOfMessage()
    assert reader.reusable


def test_counted_bytes_past_the_end_or_an_early_eof_are_remote_errors() -> None:
    for consumed, match in ((11, "past the end"), (0, "cut short")):
        reader = ResponseReader()
        reader.request(b"GET", b"/", [(b"host", b"h")])
        reader.receive_data(HEAD)
        assert isinstance(reader.next_event(), h11.Response)
        with pytest.raises(h11.RemoteProtocolError, match=match):
            _consume_then_next(reader, consumed)
        assert not reader.reusable


def _consume_then_next(reader: ResponseReader, nbytes: int) -> None:
    reader.consumed(nbytes)
    reader.next_event()
