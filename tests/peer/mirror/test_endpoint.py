"""The registry endpoint against a real upstream (Debian's docker-registry), cold and warm.

Each row of the pull checklist (oci-pull-protocol.md sections 0 and 5) is a test here; the
node runs in-process on a real loopback socket, the upstream is a real registry process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.helpers.faultproxy import Faults, fault_proxy
from tests.helpers.images import PushedImage, digest_of
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONTAINERD_ACCEPT = f"{DOCKER_V2}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"
MISSING = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"


@pytest.fixture
async def node(registry: Registry, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(
        tmp_path / "node",
        upstreams={registry.host: registry.url, "docker.io": registry.url},
        default_registry=registry.host,
    ) as n:
        yield n


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with node.client() as c:
        yield c


def _api(resp: httpx.Response) -> None:
    assert resp.headers["docker-distribution-api-version"] == "registry/2.0"


def _error_code(resp: httpx.Response) -> str:
    body = resp.json()
    assert isinstance(body["errors"], list)
    assert body["errors"]
    code: str = body["errors"][0]["code"]
    return code


async def test_base(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/")
    assert resp.status_code == 200
    _api(resp)


@pytest.mark.parametrize("kind", ["oci", "docker", "index", "list"])
async def test_manifest_by_tag_cold_then_warm(
    registry: Registry, client: httpx.AsyncClient, kind: str
) -> None:
    name = registry.new_repo()
    push = {
        "oci": registry.push_oci_image,
        "docker": registry.push_docker_image,
        "index": registry.push_oci_index,
        "list": registry.push_docker_manifest_list,
    }[kind]
    image: PushedImage = push(name, "v1")
    for state in ("cold", "warm"):
        get = await client.get(f"/v2/{name}/manifests/v1", headers={"Accept": CONTAINERD_ACCEPT})
        assert get.status_code == 200, (state, get.text)
        assert get.content == image.manifest_bytes  # byte for byte
        assert get.headers["content-type"] == image.media_type
        assert get.headers["docker-content-digest"] == image.digest
        assert get.headers["content-length"] == str(len(image.manifest_bytes))
        _api(get)
        head = await client.head(f"/v2/{name}/manifests/v1", headers={"Accept": CONTAINERD_ACCEPT})
        assert head.status_code == 200
        assert head.content == b""
        for header in ("content-type", "content-length", "docker-content-digest", "etag"):
            assert head.headers[header] == get.headers[header], header


async def test_cold_head_by_tag_then_get(registry: Registry, client: httpx.AsyncClient) -> None:
    """containerd resolves with HEAD first: a cold HEAD must carry the real size and digest."""
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1")
    head = await client.head(f"/v2/{name}/manifests/v1", headers={"Accept": CONTAINERD_ACCEPT})
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(image.manifest_bytes))
    assert head.headers["docker-content-digest"] == image.digest
    assert head.headers["content-type"] == OCI_MANIFEST
    get = await client.get(f"/v2/{name}/manifests/{image.digest}", headers={"Accept": OCI_MANIFEST})
    assert get.content == image.manifest_bytes


async def test_manifest_by_digest(registry: Registry, client: httpx.AsyncClient) -> None:
    name = registry.new_repo()
    index = registry.push_oci_index(name, "multi")
    for child in index.children:
        resp = await client.get(
            f"/v2/{name}/manifests/{child.digest}", headers={"Accept": OCI_MANIFEST}
        )
        assert resp.status_code == 200
        assert resp.content == child.manifest_bytes
        assert hashlib.sha256(resp.content).hexdigest() == child.digest.split(":")[1]


async def test_accept_in_several_header_lines(
    registry: Registry, client: httpx.AsyncClient
) -> None:
    """containers/image and the main conformance suite send several Accept lines."""
    name = registry.new_repo()
    index = registry.push_oci_index(name, "v1")
    resp = await client.get(
        f"/v2/{name}/manifests/v1",
        headers=[("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)],
    )
    assert resp.status_code == 200
    assert resp.headers["docker-content-digest"] == index.digest


async def test_if_none_match(registry: Registry, client: httpx.AsyncClient) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1")
    resp = await client.get(
        f"/v2/{name}/manifests/v1",
        headers={"Accept": OCI_MANIFEST, "If-None-Match": f'"{image.digest}"'},
    )
    assert resp.status_code == 304
    assert resp.content == b""


async def test_upstream_selection(registry: Registry, client: httpx.AsyncClient) -> None:
    """ns= (containerd), path prefix (podman/DaoCloud), default, and Docker Hub's library/."""
    image = registry.push_oci_image("library/shoaltest-sel", "v1")
    accept = {"Accept": OCI_MANIFEST}
    paths = [
        "/v2/library/shoaltest-sel/manifests/v1",  # default registry
        "/v2/shoaltest-sel/manifests/v1?ns=docker.io",  # ns + library/
        "/v2/library/shoaltest-sel/manifests/v1?ns=registry-1.docker.io",
        f"/v2/{registry.host.replace(':', '%3A')}/library/shoaltest-sel/manifests/v1",
        "/v2/docker.io/shoaltest-sel/manifests/v1",  # path prefix + library/
    ]
    for path in paths:
        resp = await client.get(path, headers=accept)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.headers["docker-content-digest"] == image.digest
    with_ns = await client.get(paths[1], headers=accept)
    assert with_ns.headers["oci-namespace"] == "docker.io"


async def test_blob_get_head_cold_and_warm(registry: Registry, client: httpx.AsyncClient) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1", [300_000])
    digest = image.layer_digests[0]
    data = image.blobs[digest]
    head_cold = await client.head(f"/v2/{name}/blobs/{digest}")
    assert head_cold.status_code == 200
    assert head_cold.headers["content-length"] == str(len(data))
    assert registry.blob_gets(name, digest) == 0  # a cold HEAD does not download
    for _ in ("cold", "warm"):
        get = await client.get(f"/v2/{name}/blobs/{digest}")
        assert get.status_code == 200
        assert get.content == data
        assert get.headers["docker-content-digest"] == digest
        assert get.headers["accept-ranges"] == "bytes"
        assert get.headers["content-length"] == str(len(data))
        _api(get)
        head = await client.head(f"/v2/{name}/blobs/{digest}")
        for header in ("content-type", "content-length", "docker-content-digest", "etag"):
            assert head.headers[header] == get.headers[header]
    assert registry.blob_gets(name, digest) == 1


RANGES = [
    ("bytes=500-1499", 206, slice(500, 1500), "bytes 500-1499/2048"),
    ("bytes=500-", 206, slice(500, 2048), "bytes 500-2047/2048"),
    ("bytes=-500", 206, slice(1548, 2048), "bytes 1548-2047/2048"),
    ("bytes=2000-5000", 206, slice(2000, 2048), "bytes 2000-2047/2048"),
]


@pytest.mark.parametrize("state", ["cold", "warm"])
async def test_ranges(registry: Registry, client: httpx.AsyncClient, state: str) -> None:
    """The conformance suite's six range cases on a 2048-byte blob."""
    name = registry.new_repo()
    data = bytes(range(256)) * 8
    digest = registry.push_blob(name, data)
    if state == "warm":
        assert (await client.get(f"/v2/{name}/blobs/{digest}")).content == data
    for header, status, part, content_range in RANGES:
        resp = await client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": header})
        assert resp.status_code == status, header
        assert resp.content == data[part]
        assert resp.headers["content-range"] == content_range
        assert resp.headers["content-length"] == str(len(data[part]))
    for header in ("bytes=500-0", "bytes=5000-10000"):
        resp = await client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": header})
        assert resp.status_code == 416
        assert resp.headers["content-range"] == "bytes */2048"


async def test_concurrent_requests_share_one_upstream_fetch(
    registry: Registry, client: httpx.AsyncClient
) -> None:
    """Single flight: 8 clients (some with ranges) at once, one upstream GET (E16)."""
    name = registry.new_repo()
    data = hashlib.shake_256(b"flight").digest(8 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    results: dict[int, bytes] = {}

    async def fetch(i: int) -> None:
        headers = {"Range": f"bytes={i * 1000}-"} if i % 2 else {}
        resp = await client.get(f"/v2/{name}/blobs/{digest}", headers=headers)
        assert resp.status_code == (206 if i % 2 else 200)
        results[i] = resp.content

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(fetch, i)
    for i, body in results.items():
        assert body == (data[i * 1000 :] if i % 2 else data)
    assert registry.blob_gets(name, digest) == 1


async def test_client_disconnect_does_not_poison_cache(
    registry: Registry, node: Node, client: httpx.AsyncClient
) -> None:
    name = registry.new_repo()
    data = hashlib.shake_256(b"disconnect").digest(16 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    async with node.client() as quitter, quitter.stream("GET", f"/v2/{name}/blobs/{digest}") as r:
        assert r.status_code == 200
        async for _ in r.aiter_raw():
            break  # hang up after the first chunk
    resp = await client.get(f"/v2/{name}/blobs/{digest}")
    assert resp.status_code == 200
    assert digest_of(resp.content) == digest
    assert registry.blob_gets(name, digest) == 1


async def test_manifest_uncached_is_404(registry: Registry, client: httpx.AsyncClient) -> None:
    name = registry.new_repo()
    registry.push_oci_image(name, "v1")
    for path in (f"/v2/{name}/manifests/nope", f"/v2/{name}/manifests/{MISSING}"):
        resp = await client.get(path)
        assert resp.status_code == 404
        assert _error_code(resp) == "MANIFEST_UNKNOWN"
        _api(resp)
    blob = await client.get(f"/v2/{name}/blobs/{MISSING}")
    assert (blob.status_code, _error_code(blob)) == (404, "BLOB_UNKNOWN")
    head = await client.head(f"/v2/{name}/blobs/{MISSING}")
    assert head.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/x/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
        ("HEAD", "/v2/x/manifests/.INVALID_MANIFEST_NAME", 404, None),
        ("GET", "/v2/x/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
        ("GET", "/v2/x/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("GET", "/v2/UPPER/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/a/%2e%2e/b/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/x/manifests/latest?ns=evil%20host", 400, "NAME_INVALID"),
        ("PUT", "/v2/x/manifests/latest", 405, "UNSUPPORTED"),
        ("POST", "/v2/x/blobs/uploads/", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/x/blobs/" + MISSING, 405, "UNSUPPORTED"),
        ("PATCH", "/v2/x/blobs/uploads/abc", 405, "UNSUPPORTED"),
        ("GET", "/v2/x/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/x/referrers/" + MISSING, 404, "MANIFEST_UNKNOWN"),
        ("GET", "/nothing/here", 404, "NAME_UNKNOWN"),
    ],
)
async def test_bad_requests_get_oci_errors(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str | None
) -> None:
    resp = await client.request(method, path)
    assert resp.status_code == status
    _api(resp)
    if code is not None:
        assert _error_code(resp) == code


async def _raw(node: Node, request: bytes) -> bytes:
    host, port = node.host.split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


@pytest.mark.parametrize(
    "target",
    [b"/v2/a/../../etc/passwd/manifests/latest", b"/v2/../../../etc/passwd",
     b"/v2/a/blobs/sha256:../../../../etc/passwd", b"/v2/a%00b/manifests/x"],
)  # fmt: skip
async def test_path_traversal_is_refused(node: Node, target: bytes) -> None:
    reply = await _raw(
        node, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404)
    assert b'"errors"' in reply


async def test_garbage_request_line_gets_400(node: Node) -> None:
    reply = await _raw(node, b"\x00\x01 nonsense\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")


async def test_oversized_headers_are_refused(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/", headers={"X-Big": "a" * 64 * 1024})
    assert resp.status_code == 431


async def test_allows_denies_with_clear_message(registry: Registry, tmp_path: Path) -> None:
    allows = tmp_path / "allows.txt"
    allows.write_text(f"{registry.host}/library/*\n")
    name = registry.new_repo("team/app")
    registry.push_oci_image(name, "v1")
    async with running_node(
        tmp_path / "n", upstreams={registry.host: registry.url}, default_registry=registry.host,
        allows=allows,
    ) as node, node.client() as client:  # fmt: skip
        denied = await client.get(f"/v2/{name}/manifests/v1")
        assert denied.status_code == 403
        assert _error_code(denied) == "DENIED"
        assert "allows.txt" in denied.json()["errors"][0]["message"]
        other = await client.get("/v2/x/manifests/v1?ns=ghcr.io")
        assert other.status_code == 403
        allowed = registry.push_oci_image(registry.new_repo("library/ok"), "v1")
        resp = await client.get(
            f"/v2/{allowed.name}/manifests/v1", headers={"Accept": OCI_MANIFEST}
        )
        assert resp.status_code == 200


async def test_metrics_and_healthz(registry: Registry, client: httpx.AsyncClient) -> None:
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1")
    digest = image.layer_digests[0]
    await client.get(f"/v2/{name}/blobs/{digest}")
    # The client has every byte once the digest checks out; the commit (fsync) follows.
    with trio.fail_after(10):
        while "shoal_downloads_in_progress 0.0" not in (await client.get("/metrics")).text:  # noqa: ASYNC110  # polling another process's view
            await trio.sleep(0.01)
    await client.get(f"/v2/{name}/blobs/{digest}")
    assert (await client.get("/healthz")).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'shoal_served_bytes_total{source="cache"}' in text
    assert "shoal_cache_hits_total 1.0" in text
    assert "shoal_cache_misses_total 1.0" in text
    assert "shoal_cache_hit_ratio 0.5" in text


async def test_origin_down_serves_cache_and_stale_tags(registry: Registry, tmp_path: Path) -> None:
    """Stale-if-error: cached content still pulls, tags come with a Warning; misses fail fast."""
    name = registry.new_repo()
    image = registry.push_oci_image(name, "v1")
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    data = tmp_path / "n"
    common = {"default_registry": registry.host, "tag_ttl": 0.0}
    async with running_node(data, upstreams={registry.host: registry.url}, **common) as node:
        async with node.client() as client:
            assert (
                await client.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            ).status_code == 200
            for digest in image.blobs:
                assert (await client.get(f"/v2/{name}/blobs/{digest}")).status_code == 200
    async with running_node(data, upstreams={registry.host: dead}, **common) as node:
        async with node.client() as client:
            resp = await client.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert resp.status_code == 200
            assert resp.content == image.manifest_bytes
            assert resp.headers["warning"].startswith('299 - "origin unreachable')
            for digest, blob in image.blobs.items():
                assert (await client.get(f"/v2/{name}/blobs/{digest}")).content == blob
            with trio.fail_after(2):
                miss = await client.get(
                    f"/v2/{name}/manifests/other", headers={"Accept": OCI_MANIFEST}
                )
            assert miss.status_code == 503
            assert "unreachable" in miss.json()["errors"][0]["message"]


def test_error_bodies_are_json(tmp_path: Path) -> None:
    """The error renderer produces the spec's shape (pure)."""
    from peer.errors import RegistryError
    from peer.mirror.responses import error_response

    resp = error_response(RegistryError("DENIED", "no", status=403, detail={"a": 1}))
    assert resp.status == 403
    assert isinstance(resp.body, bytes)
    assert json.loads(resp.body) == {
        "errors": [{"code": "DENIED", "message": "no", "detail": {"a": 1}}]
    }


async def test_truncated_upstream_body_is_never_committed(
    registry: Registry, tmp_path: Path
) -> None:
    """The origin cuts a blob short: the client sees a broken transfer, the cache stays clean."""
    name = registry.new_repo()
    data = hashlib.shake_256(b"truncate").digest(2 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    faults = Faults(cut_after=300_000)
    async with fault_proxy(registry.host, faults) as proxy, running_node(
        tmp_path / "n", upstreams={registry.host: proxy}, default_registry=registry.host
    ) as node, node.client() as client:  # fmt: skip
        with pytest.raises(httpx.HTTPError):
            await client.get(f"/v2/{name}/blobs/{digest}")
        await trio.sleep(0.2)
        assert list((tmp_path / "n" / "cache").rglob("*" + digest.split(":")[1] + "*")) == []
        faults.cut_after = None
        async with node.client() as fresh:
            resp = await fresh.get(f"/v2/{name}/blobs/{digest}")
        assert resp.status_code == 200
        assert resp.content == data


async def test_stalled_origin_fails_the_pull_not_the_node(
    registry: Registry, tmp_path: Path
) -> None:
    """An origin that stops sending mid-manifest: the client gets an OCI error, not a hang."""
    name = registry.new_repo()
    registry.push_oci_image(name, "v1")
    faults = Faults(stall_after=10)
    async with fault_proxy(registry.host, faults) as proxy, running_node(
        tmp_path / "n", upstreams={registry.host: proxy}, default_registry=registry.host,
        origin_timeout=1.0,
    ) as node, node.client(timeout=60) as client:  # fmt: skip
        resp = await client.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert resp.status_code == 503
        assert _error_code(resp) == "UNAVAILABLE"
