"""Mutual TLS on the P2P port (``peer.mesh.tls``), with ``trustme`` certificates: over
memory streams, then real nodes on loopback sharing a blob while strangers get nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
import trustme

from peer.cli import _peer_parser
from peer.config import PEER_FLAGS, merged, peer_config
from peer.errors import ConfigError
from peer.mesh.link import PeerLink
from peer.mesh.tls import MeshTLS
from peer.mesh.wire.connection import PeerConnection
from peer.mesh.wire.framing import FrameBuffer
from peer.mesh.wire.messages import Handshake, Interested, Message, decode, encode, parse_digest
from tests.helpers.images import digest_of
from tests.helpers.mesh import running_tracker, wait_announced, wait_held
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry

DEAD = "http://127.0.0.1:9"


@dataclass
class Files:
    cert: Path
    key: Path
    ca: Path


def issue(ca: trustme.CA, name: str, root: Path) -> Files:
    root.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(name)
    files = Files(root / f"{name}.crt", root / f"{name}.key", root / "ca.crt")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


def load(files: Files) -> MeshTLS:
    return MeshTLS.load(files.cert, files.key, files.ca)


# ---- over memory streams -----------------------------------------------------------------


async def test_members_handshake_and_link(tmp_path: Path) -> None:
    ca = trustme.CA()
    a, b = load(issue(ca, "a", tmp_path / "a")), load(issue(ca, "b", tmp_path / "b"))
    left, right = trio.testing.memory_stream_pair()
    wrapped: dict[str, trio.abc.Stream] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                wrapped["b"] = await b.accept(right)

            nursery.start_soon(accept)
            wrapped["a"] = await a.dial(left)
        send_a, _ = trio.open_memory_channel[Message](4)
        send_b, _ = trio.open_memory_channel[Message](4)
        hello = Handshake(peer_id="a", max_requests=2, nonce=os.urandom(32))
        link_a = PeerLink(wrapped["a"], hello, events=send_a, conn=PeerConnection(dialer=True))
        hello_b = Handshake(peer_id="b", max_requests=2, nonce=os.urandom(32))
        link_b = PeerLink(wrapped["b"], hello_b, events=send_b)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link_b.run)
            theirs = await nursery.start(link_a.run)
            assert theirs.peer_id == "b"
            link_a.abort()  # close() would wait for an EOF: TLS streams do not half-close
            link_b.abort()


@pytest.mark.parametrize("stranger", ["other CA", "no certificate"])
async def test_strangers_fail_the_tls_handshake(tmp_path: Path, stranger: str) -> None:
    member = load(issue(trustme.CA(), "member", tmp_path / "m"))
    if stranger == "other CA":
        client = load(issue(trustme.CA(), "x", tmp_path / "x")).client
    else:
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    left, right = trio.testing.memory_stream_pair()
    errors: list[BaseException] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                try:
                    await member.accept(right)
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            nursery.start_soon(accept)
            wrapped = trio.SSLStream(left, client)
            with contextlib.suppress(trio.BrokenResourceError):
                await wrapped.do_handshake()
                await wrapped.send_all(b"hello?")  # TLS 1.3: the refusal comes after
                await wrapped.receive_some()
            await trio.aclose_forcefully(wrapped)
    assert errors, "the member accepted a stranger's TLS handshake"


def test_config_wants_all_three_files(tmp_path: Path) -> None:
    files = issue(trustme.CA(), "n", tmp_path)
    parser = _peer_parser()
    ok = parser.parse_args(["--tls-cert", str(files.cert), "--tls-key", str(files.key),
                            "--tls-ca", str(files.ca)])  # fmt: skip
    config = peer_config(merged(ok, PEER_FLAGS, environ={}))
    assert config.tls_ca == files.ca
    half = parser.parse_args(["--tls-cert", str(files.cert)])
    with pytest.raises(ConfigError, match="go together"):
        peer_config(merged(half, PEER_FLAGS, environ={}))
    swapped = parser.parse_args(["--tls-cert", str(files.key), "--tls-key", str(files.cert),
                                 "--tls-ca", str(tmp_path / "missing.crt")])  # fmt: skip
    with pytest.raises(ConfigError, match="--tls-cert"):
        peer_config(merged(swapped, PEER_FLAGS, environ={}))


# ---- real nodes on loopback --------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_nodes(
    tmp_path: Path, tracker: str, registry: Registry, ca: trustme.CA
) -> AsyncIterator[list[Node]]:
    """node0 with the origin, node1 without; each with its own certificate of ``ca``."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i, origin in enumerate((registry.url, DEAD)):
            files = issue(ca, f"node{i}", tmp_path / f"pki{i}")
            node = await stack.enter_async_context(
                running_node(
                    tmp_path / f"node{i}", tracker=tracker, node_id=f"node{i}",
                    p2p_listen=("127.0.0.1", 0), upstreams={"docker.io": origin},
                    tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca,
                )
            )  # fmt: skip
            nodes.append(node)
        await wait_announced(tracker, 2)
        yield nodes


async def test_nodes_share_over_mtls_and_strangers_get_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    ca = trustme.CA()
    name = registry.new_repo("library/tls")
    data = hashlib.shake_256(b"over tls").digest(1024 * 1024 + 3)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    with trio.fail_after(60):
        async with (
            running_tracker() as tracker,
            tls_nodes(tmp_path, tracker, registry, ca) as (
                a,
                b,
            ),
        ):
            async with a.client() as ca_client:
                assert (await ca_client.get(path)).content == data
            await wait_held(tracker, digest)
            async with b.client() as cb:
                resp = await cb.get(path)  # b has no origin: over TLS from a
                assert resp.status_code == 200
                assert digest_of(resp.content) == digest
            port = await _p2p_port(tracker, "node0")
            # plain TCP speaking the wire protocol gets not a single message back
            assert await _plain_probe(port, digest) == []
            # TLS with a certificate of another CA (and trusting anything itself) is refused
            # by the member: not one byte of the wire protocol comes back
            assert await _foreign_tls_probe(port, issue(trustme.CA(), "m", tmp_path / "m")) == b""


async def _p2p_port(tracker: str, peer_id: str) -> int:
    async with httpx.AsyncClient() as client:
        rows = (await client.get(f"{tracker}/admin/peers")).json()["peers"]
    return int(next(row["port"] for row in rows if row["peer_id"] == peer_id))


async def _plain_probe(port: int, digest: str) -> list[Message]:
    frames = FrameBuffer(max_frame=1 << 20)
    received: list[Message] = []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        hello = Handshake(peer_id="mallory", max_requests=4, nonce=os.urandom(32))
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(encode(hello) + encode(Interested(digest=parse_digest(digest))))
        while True:
            try:
                data = await stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            frames.feed(data)
            with contextlib.suppress(Exception):  # TLS alerts are not frames
                while (frame := frames.next_frame()) is not None:
                    received.append(decode(frame))
    return received


async def _foreign_tls_probe(port: int, files: Files) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(files.cert), str(files.key))
    received = b""
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), context)
    try:
        await stream.do_handshake()
        await stream.send_all(encode(Handshake(peer_id="mallory", max_requests=1)))
        while data := await stream.receive_some():
            received += data
    except trio.BrokenResourceError:
        pass  # the member's alert: certificate unknown
    finally:
        await trio.aclose_forcefully(stream)
    return received
