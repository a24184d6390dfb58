"""peer.mirror.blobhttp: the lean transport against scripted origins on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from peer.mirror.blobhttp import RAW_BODY, LeanTransport, RawBody

Script = Callable[[trio.SocketStream, int], Awaitable[None]]


async def _origin(nursery: trio.Nursery, script: Script) -> tuple[str, list[int]]:
    """An origin that runs ``script(stream, n)`` for its n-th connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(len(accepted))
        async with stream:
            await script(stream, accepted[-1])

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}", accepted


async def _request_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    return data


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def _get(client: httpx.AsyncClient, url: str) -> bytes:
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_bodies_and_connection_reuse(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream, _: int) -> None:
        while head := await _request_head(stream):
            size = int(head.split(b" ")[1].rsplit(b"/", 1)[1])
            await stream.send_all(_ok(bytes(size % 251 for size in range(size))))

    url, accepted = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for size in (0, 1, 100_000, 5_000_000):
            assert await _get(client, f"{url}/{size}") == bytes(i % 251 for i in range(size))
    assert len(accepted) == 1


async def test_a_connection_closed_while_idle_is_replaced(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream, _: int) -> None:
        await _request_head(stream)
        await stream.send_all(_ok(b"hello"))  # keep-alive promised, then hang up

    url, accepted = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert await _get(client, f"{url}/a") == b"hello"
        await trio.sleep(0.05)  # the origin's close reaches us
        assert await _get(client, f"{url}/b") == b"hello"
    assert len(accepted) == 2


async def test_a_reused_connection_that_dies_mid_request_is_retried_once(
    nursery: trio.Nursery,
) -> None:
    async def script(stream: trio.SocketStream, n: int) -> None:
        await _request_head(stream)
        await stream.send_all(_ok(b"one"))
        if n == 0:
            await _request_head(stream)  # takes the second request, answers nothing
            return
        while await _request_head(stream):
            await stream.send_all(_ok(b"two"))

    url, accepted = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert await _get(client, f"{url}/a") == b"one"
        assert await _get(client, f"{url}/b") == b"one"  # the retry's first answer
    assert len(accepted) == 2


async def test_a_short_body_is_a_protocol_error_and_not_pooled(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream, _: int) -> None:
        await _request_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")

    url, _ = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="cut short"):
            await _get(client, f"{url}/a")


async def test_a_stalled_body_times_out(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream, _: int) -> None:
        await _request_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await trio.sleep_forever()

    url, _ = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await _get(client, f"{url}/a")


async def test_connect_errors_and_unsupported_requests() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.post(f"http://127.0.0.1:{port}/", content=b"x")


@pytest.mark.parametrize("buffer_size", [1, 7, 1 << 20])
async def test_receive_into_the_callers_buffer(nursery: trio.Nursery, buffer_size: int) -> None:
    body = bytes(i % 251 for i in range(20_000))

    async def script(stream: trio.SocketStream, _: int) -> None:
        while await _request_head(stream):
            await stream.send_all(_ok(body))  # the head and the first bytes in one segment

    url, accepted = await _origin(nursery, script)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(2):
            async with client.stream("GET", f"{url}/x") as response:
                raw = response.extensions[RAW_BODY]
                assert isinstance(raw, RawBody)
                got = bytearray()
                buffer = bytearray(buffer_size)
                while n := await raw.receive_into(memoryview(buffer)):
                    got += buffer[:n]
            assert bytes(got) == body
    assert len(accepted) == 1
