"""A TCP proxy on loopback that misbehaves on demand: cuts, stalls or trickles responses.

Sits between a node and a real upstream so tests can make a real registry look broken
(truncated bodies, an origin that stops sending, a slow link) without mocking HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio


@dataclass
class Faults:
    """What to do to each connection's response stream (changeable while running)."""

    cut_after: int | None = None  # close both sides after this many response bytes
    stall_after: int | None = None  # stop forwarding (but keep the socket open) after this many
    rate: int | None = None  # bytes per second, roughly
    connections: int = 0


async def _pump_up(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _pump_down(src: trio.SocketStream, dst: trio.SocketStream, faults: Faults) -> None:
    sent = 0
    try:
        while data := await src.receive_some(65536):
            if faults.cut_after is not None and sent + len(data) > faults.cut_after:
                await dst.send_all(data[: max(0, faults.cut_after - sent)])
                return
            if faults.stall_after is not None and sent + len(data) > faults.stall_after:
                await dst.send_all(data[: max(0, faults.stall_after - sent)])
                await trio.sleep_forever()
            if faults.rate:
                for i in range(0, len(data), 4096):
                    await dst.send_all(data[i : i + 4096])
                    await trio.sleep(4096 / faults.rate)
            else:
                await dst.send_all(data)
            sent += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@asynccontextmanager
async def fault_proxy(upstream_host: str, faults: Faults) -> AsyncIterator[str]:
    """Yields ``http://127.0.0.1:PORT`` forwarding to ``upstream_host`` (``host:port``)."""
    host, port = upstream_host.rsplit(":", 1)

    async def handle(client: trio.SocketStream) -> None:
        faults.connections += 1
        async with client:
            try:
                server = await trio.open_tcp_stream(host, int(port))
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(_pump_up, client, server)
                await _pump_down(server, client, faults)
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        bound = listeners[0].socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{bound}"
        finally:
            nursery.cancel_scope.cancel()
