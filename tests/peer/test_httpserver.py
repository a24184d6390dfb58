"""The node's HTTP/1.1 shell over memory streams: refusals are well-formed OCI errors."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from peer.httpserver import HEAD_TIMEOUT, IDLE_TIMEOUT, Request, Response, _handle_stream


async def _never(request: Request) -> Response:
    raise AssertionError("a malformed request reached the handler")


@pytest.mark.parametrize(
    "raw",
    [b'\\ "quoted" \\x /\r\n\r\n', b"GET /\\ HTTP/1.1\x00\r\n\r\n", b"\x08 / HTTP/1.1\r\n\r\n"],
)
async def test_protocol_errors_answer_valid_json(raw: bytes) -> None:
    """The refusal quotes the client's bytes, backslashes included (found by
    tests/fuzz/test_registry.py: the body was a format string, not JSON)."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_handle_stream, _never, server)
        await client.send_all(raw)
        reply = b""
        with trio.fail_after(5):
            while chunk := await client.receive_some():
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 4")
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"


async def _ok(request: Request) -> Response:
    return Response(200, [("content-length", "2")], b"ok")


async def _served_until_closed(send: bytes, autojump_clock: trio.testing.MockClock) -> float:
    """Send ``send`` and nothing more; how long (virtual time) until the node hangs up."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_handle_stream, _ok, server)
        started = trio.current_time()
        await client.send_all(send)
        with trio.fail_after(3600):
            while await client.receive_some():
                pass
    return trio.current_time() - started


async def test_slowloris_head_is_cut_at_the_head_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that never finishes its request head holds a connection for HEAD_TIMEOUT."""
    took = await _served_until_closed(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ", autojump_clock)
    assert took == pytest.approx(HEAD_TIMEOUT)


async def test_idle_keep_alive_is_closed_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    took = await _served_until_closed(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", autojump_clock)
    assert took == pytest.approx(IDLE_TIMEOUT)


async def test_silent_connection_is_cut_at_the_head_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert await _served_until_closed(b"", autojump_clock) == pytest.approx(HEAD_TIMEOUT)
