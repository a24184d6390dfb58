"""The node client over canned answers (httpx.MockTransport): checks and error mapping."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from peer.errors import IntegrityError
from peer.ops.client import NodeClient, normalise_url, parse_upstreams
from peer.ops.errors import ImageDenied, ImageNotFound, NodeError, ServiceUnavailable
from peer.ops.images import parse_reference
from peer.ops.oci import OCI_MANIFEST, Descriptor

IMAGE = parse_reference("alpine:3.20")
BODY = b'{"schemaVersion":2}'
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
BLOB = b"x" * 1000
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> NodeClient:
    return NodeClient("127.0.0.1:5050", transport=httpx.MockTransport(handler))


class Chunked(httpx.AsyncByteStream):
    """A body that arrives in 256-byte chunks, as a streamed blob does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 256):
            yield self.data[i : i + 256]


def blob_answer(data: bytes) -> Handler:
    return lambda request: httpx.Response(200, stream=Chunked(data))


def oci_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message}]})


async def test_get_manifest_asks_like_containerd() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=BODY, headers={
            "content-type": f"{OCI_MANIFEST}; charset=utf-8", "docker-content-digest": DIGEST,
        })  # fmt: skip

    async with client(handler) as node:
        got = await node.get_manifest(IMAGE, "3.20")
    assert (got.body, got.digest, got.media_type) == (BODY, DIGEST, OCI_MANIFEST)
    (request,) = seen
    assert str(request.url) == "http://127.0.0.1:5050/v2/library/alpine/manifests/3.20?ns=docker.io"
    assert "application/vnd.oci.image.index.v1+json" in request.headers["accept"]
    assert request.headers["user-agent"].startswith("shoal-ops/")


@pytest.mark.parametrize(
    ("reference", "announced", "message"),
    [
        ("3.20", "sha256:" + "0" * 64, "hash to sha256:.*, not sha256:0000"),
        ("sha256:" + "1" * 64, "", "not sha256:1111"),
    ],
)
async def test_get_manifest_refuses_bytes_that_do_not_match(
    reference: str, announced: str, message: str
) -> None:
    headers = {"content-type": OCI_MANIFEST}
    if announced:
        headers["docker-content-digest"] = announced

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY, headers=headers)

    async with client(handler) as node:
        with pytest.raises(IntegrityError, match=message):
            await node.get_manifest(IMAGE, reference)


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (oci_error(403, "DENIED", "not in allows.txt"), ImageDenied,
         "docker.io/library/alpine is denied by the node's allows.txt"),
        (oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"), ImageNotFound,
         "docker.io/library/alpine:3.20: node answered 404 MANIFEST_UNKNOWN: manifest unknown"),
        (oci_error(503, "UNAVAILABLE", "origin down"), NodeError,
         "node answered 503 UNAVAILABLE: origin down"),
        (httpx.Response(502, text="<html>bad gateway</html>"), NodeError,
         "docker.io/library/alpine:3.20: node answered 502$"),
    ],
)  # fmt: skip
async def test_node_errors(response: httpx.Response, error: type[Exception], message: str) -> None:
    async with client(lambda request: response) as node:
        with pytest.raises(error, match=message) as info:
            await node.get_manifest(IMAGE, "3.20")
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (httpx.ConnectError("refused"), "cannot connect to the node at http://127.0.0.1:5050"),
        (httpx.ReadTimeout("slow"), "the node at http://127.0.0.1:5050 did not answer in time"),
        (httpx.RemoteProtocolError("junk"), "talking to the node .* failed: RemoteProtocolError"),
    ],
)
async def test_transport_failures_are_one_clear_error(exc: Exception, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(handler) as node:
        with pytest.raises(ServiceUnavailable, match=message):
            await node.ping()
        with pytest.raises(ServiceUnavailable, match=message):
            await node.fetch_blob(IMAGE, Descriptor("x", BLOB_DIGEST, len(BLOB)))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (BLOB[:600], "only 600 of 1000 bytes"),
        (BLOB + b"more", "more than the 1000 bytes the manifest promises"),
        (b"y" * 1000, "1000 bytes that hash to sha256:"),
    ],
)
async def test_fetch_blob_checks_size_and_digest(body: bytes, message: str) -> None:
    async with client(blob_answer(body)) as node:
        prefix = f"blob {BLOB_DIGEST} of docker.io/library/alpine:3.20 from the node: "
        with pytest.raises(IntegrityError, match=prefix + message):
            await node.fetch_blob(IMAGE, Descriptor("x", BLOB_DIGEST, len(BLOB)))


async def test_fetch_blob_reports_progress() -> None:
    chunks: list[int] = []
    async with client(blob_answer(BLOB)) as node:
        got = await node.fetch_blob(IMAGE, Descriptor("x", BLOB_DIGEST, len(BLOB)), chunks.append)
    assert got == sum(chunks) == len(BLOB)
    assert chunks == [256, 256, 256, 232]


async def test_ping_refuses_something_else() -> None:
    async with client(lambda request: httpx.Response(404)) as node:
        with pytest.raises(NodeError, match="answered 404 to GET /v2/: is it a shoal node"):
            await node.ping()


async def test_ping_accepts_the_challenge_of_a_node_with_private_registries() -> None:
    shoal = {"www-authenticate": 'Basic realm="shoal"'}
    async with client(lambda request: httpx.Response(401, headers=shoal)) as node:
        await node.ping()
    other = {"www-authenticate": 'Bearer realm="https://auth.example/token"'}
    async with client(lambda request: httpx.Response(401, headers=other)) as node:
        with pytest.raises(NodeError, match="answered 401"):
            await node.ping()


@pytest.mark.parametrize(
    ("text", "url"),
    [("127.0.0.1:5050", "http://127.0.0.1:5050"), ("https://n.example/", "https://n.example")],
)
def test_normalise_url(text: str, url: str) -> None:
    assert normalise_url(text) == url


def test_parse_upstreams() -> None:
    assert parse_upstreams(["docker.io=http://r:5000/", "GHCR.io=https://g,quay.io=https://q"]) == {
        "docker.io": "http://r:5000", "ghcr.io": "https://g", "quay.io": "https://q",
    }  # fmt: skip
    with pytest.raises(ValueError, match="REGISTRY=http"):
        parse_upstreams(["docker.io=ftp://x"])
