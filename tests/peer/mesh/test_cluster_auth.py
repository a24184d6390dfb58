"""The cluster secret on real sockets: a tracker and nodes on loopback, a real registry.

Members share a blob through the mesh; a node without the secret, or with another one,
is refused by the tracker (it cannot announce or look up) and by the members' P2P ports
(it gets neither a Bitfield nor a piece).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from peer.mesh.wire.auth import make_auth
from peer.mesh.wire.framing import FrameBuffer
from peer.mesh.wire.messages import (
    Auth,
    Handshake,
    Interested,
    Message,
    Request,
    decode,
    encode,
    parse_digest,
)
from tests.helpers.images import digest_of
from tests.helpers.mesh import mesh_nodes, wait_held
from tests.helpers.node import running_node
from tests.helpers.registry import Registry
from tracker.auth import ClusterKeys
from tracker.config import TrackerConfig
from tracker.service import serve as serve_tracker

SECRET = "loopback-cluster-secret-0123456789"
DEAD = "http://127.0.0.1:9"
TIMEOUT = 60


@contextlib.asynccontextmanager
async def secret_tracker() -> AsyncIterator[str]:
    config = TrackerConfig(listen_host="127.0.0.1", listen_port=0, mdns=False,
                           cluster_secret=SECRET)  # fmt: skip
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_tracker(config, task_status=task_status)
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


async def p2p_port_of(tracker: str, peer_id: str) -> int:
    async with httpx.AsyncClient() as client:
        rows = (await client.get(f"{tracker}/admin/peers")).json()["peers"]
    return int(next(row["port"] for row in rows if row["peer_id"] == peer_id))


async def probe(port: int, digest: str, keys: ClusterKeys | None) -> list[Message]:
    """Dial a node as a stranger and ask for ``digest``: every message it sent us, in order.

    Plays the protocol as far as it can: our handshake, then (with ``keys``) our Auth
    once theirs has come, then Interested and a Request, then read until the node hangs up.
    """
    frames = FrameBuffer(max_frame=1 << 20)
    received: list[Message] = []
    raw = parse_digest(digest)
    hello = Handshake(peer_id="mallory", max_requests=4, nonce=os.urandom(32))
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:

        async def read(count: int | None) -> None:
            while count is None or len(received) < count:
                try:
                    data = await stream.receive_some(1 << 16)
                except trio.BrokenResourceError:  # reset: the node dropped us
                    return
                if not data:
                    return
                frames.feed(data)
                while (frame := frames.next_frame()) is not None:
                    received.append(decode(frame))

        await stream.send_all(encode(hello))
        await read(1)
        theirs = received[0]
        assert isinstance(theirs, Handshake)
        with contextlib.suppress(trio.BrokenResourceError):
            if keys is not None:
                await stream.send_all(
                    encode(make_auth(keys, ours=hello, theirs=theirs, dialer=True))
                )
            await stream.send_all(
                encode(Interested(digest=raw)) + encode(Request(digest=raw, index=0, length=1024))
            )
        await read(None)
    return received


async def test_members_share_strangers_get_nothing(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = registry.new_repo("library/secret")
    data = hashlib.shake_256(b"members only").digest(2 * 1024 * 1024 + 5)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    upstreams = {0: {"docker.io": registry.url}, 1: {"docker.io": DEAD}}
    with trio.fail_after(TIMEOUT):
        async with secret_tracker() as tracker, mesh_nodes(
            tmp_path, tracker, 2, upstreams_for=upstreams.__getitem__, cluster_secret=SECRET
        ) as (a, b):  # fmt: skip
            async with a.client() as ca:
                assert (await ca.get(path)).content == data
            await wait_held(tracker, digest)
            async with b.client() as cb:  # b has no origin: the bytes come from a
                resp = await cb.get(path)
                assert resp.status_code == 200
                assert digest_of(resp.content) == digest

            port = await p2p_port_of(tracker, "node0")
            for keys in (None, ClusterKeys.parse("another-cluster-secret-0123")):
                sent = await probe(port, digest, keys)
                # its handshake and (unless it hung up first) its Auth: nothing more
                assert [type(m) for m in sent] in ([Handshake], [Handshake, Auth]), sent

            for secret in (None, "another-cluster-secret-0123"):
                async with running_node(
                    tmp_path / f"stranger-{secret is None}", tracker=tracker, node_id="stranger",
                    p2p_listen=("127.0.0.1", 0), upstreams={"docker.io": DEAD},
                    cluster_secret=secret,
                ) as stranger:  # fmt: skip
                    async with stranger.client(timeout=10) as cs:
                        resp = await cs.get(path)
                    assert resp.status_code >= 400
                    assert resp.content != data
                    async with httpx.AsyncClient() as admin:
                        rows = (await admin.get(f"{tracker}/admin/peers")).json()["peers"]
                    assert "stranger" not in {row["peer_id"] for row in rows}
    assert SECRET not in caplog.text  # nor any part of it worth having
    assert SECRET[:16] not in caplog.text
