"""The node's HTTP/1.1 shell over memory streams: refusals are well-formed OCI errors."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from peer.httpserver import Request, Response, _handle_stream


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
