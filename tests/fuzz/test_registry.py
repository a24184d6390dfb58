"""Fuzz the registry endpoint: request lines, paths, queries, headers (Range above all)
and bodies, as raw bytes over a real socket to an in-process node with a real origin.

Every answer must be a 2xx, 3xx or 4xx — with an OCI error body (``{"errors": [...]}``) for
4xx — or a dropped connection; a 503 only as an OCI ``UNAVAILABLE``, a 501 only for a
transfer coding we do not implement (RFC 9112 section 6.1); never a 500. The node
must stay up and keep serving a real blob between cases. ``allows.txt`` admits the test
registry only, so no case can send the node to the internet (others get 403 ``DENIED``).
Already covered by name in tests/peer/mirror/test_endpoint.py: path traversal, oversized
heads, a garbage request line; this explores the space around them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import CASES, FUZZ, ErrorLog
from tests.helpers.background import Background, in_thread
from tests.helpers.images import PushedImage
from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry

MISSING = "sha256:" + "e" * 64


@dataclass
class Target:
    node: Background[Node]
    image: PushedImage
    origin: str  # the registry's host:port
    host: str
    port: int


@pytest.fixture
def target(registry: Registry, tmp_path: Path) -> Iterator[Target]:
    image = registry.push_oci_image(registry.new_repo("library/fuzz"), "v1", layer_sizes=[70_000])
    allows = tmp_path / "allows.txt"
    allows.write_text(f"{registry.host}/**\ndocker.io/**\n")
    with in_thread(
        lambda: running_node(
            tmp_path / "node", upstreams={registry.host: registry.url, "docker.io": registry.url},
            default_registry=registry.host, allows=allows, origin_timeout=5.0,
        )
    ) as node:  # fmt: skip
        host, port = node.value.host.split(":")
        yield Target(node, image, registry.host, host, int(port))


def _requests(image: PushedImage, origin: str) -> st.SearchStrategy[bytes]:
    """Whole HTTP requests as bytes: mostly well-framed, with hostile parts."""
    digests = [image.digest, *image.blobs, MISSING]
    names = st.sampled_from(
        [image.name, "library/x", "x", "a/b/c", "..", "a/../b", "A", "-x", "x" * 300, "a//b",
         "%2e%2e/etc", "a%00b", "docker.io/library/x", "127.0.0.1:9/x", "ghcr.io/x"]
    ) | st.text(st.characters(codec="utf-8", exclude_characters="\r\n "), max_size=40)  # fmt: skip
    references = st.sampled_from(
        [*digests, "v1", "latest", "sha256:", "sha256:" + "A" * 64, "sha512:" + "a" * 128,
         "sha256:../../x", "md5:abc", "x" * 200, "v1%00"]
    ) | st.text(max_size=80)  # fmt: skip
    kinds = st.sampled_from(["blobs", "manifests", "tags/list", "referrers", "blobs/uploads", ""])
    v2 = st.builds(lambda n, k, r: f"/v2/{n}/{k}/{r}", names, kinds, references)
    paths = v2 | st.sampled_from(["/", "/v2", "/v2/", "//v2/", "/healthz", "/metrics", "*"])
    paths = paths | st.text(max_size=60)
    query_values = st.sampled_from([origin, "docker.io", "", "a" * 300, "ghcr.io"])
    query_values = query_values | st.text(max_size=30)
    queries = st.lists(
        st.tuples(st.sampled_from(["ns", "n", "last", "digest", "x"]), query_values), max_size=3
    )

    def target(path: str, query: list[tuple[str, str]], quoted: bool) -> bytes:
        text = quote(path, safe="/:@%*") if quoted else path
        if query:
            text += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
        return text.encode("utf-8", "surrogateescape")

    targets = st.builds(target, paths, queries, st.booleans())
    ranges = st.one_of(
        st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 80_000), st.integers(-5, 80_000)),
        st.builds(lambda a: f"bytes={a}-", st.integers(-1, 10**20)),
        st.builds(lambda a: f"bytes=-{a}", st.integers(-1, 10**20)),
        st.sampled_from(
            [
                "bytes=0-0,5-9",
                "bytes=",
                "bytes=--1",
                "items=0-1",
                "bytes=1-0",
                "bytes=0-1,",
                "bytes= 0-1",
            ]
        ),
        st.text(max_size=30),
    )
    header_values = {
        "range": ranges,
        "accept": st.sampled_from(
            ["application/vnd.oci.image.manifest.v1+json", "*/*", "", "a/b;q=x, ,"]
        )
        | st.text(max_size=60),
        "if-none-match": st.sampled_from([f'"{d}"' for d in digests]) | st.text(max_size=30),
        "authorization": st.sampled_from(["Bearer x", "Basic !!", "Basic " + "A" * 5000]),
        "content-length": st.integers(-1, 10**12).map(str) | st.text(max_size=10),
        "transfer-encoding": st.sampled_from(["chunked", "gzip", "chunked, chunked", "x"]),
        "connection": st.sampled_from(["close", "keep-alive", "upgrade", ""]),
        "expect": st.just("100-continue"),
    }
    known = st.sampled_from(sorted(header_values)).flatmap(
        lambda k: st.tuples(st.just(k), header_values[k])
    )
    random_header = st.tuples(
        st.text(st.characters(codec="latin-1"), min_size=1, max_size=20),
        st.text(st.characters(codec="latin-1"), max_size=40),
    )
    headers = st.lists(known | random_header, max_size=6)
    methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    methods = methods | st.text(st.characters(codec="ascii"), min_size=1, max_size=8)

    def build(
        method: str,
        tgt: bytes,
        version: bytes,
        host: bool,
        hdrs: list[tuple[str, str]],
        body: bytes,
    ) -> bytes:
        lines = [method.encode("latin-1", "replace") + b" " + tgt + b" " + version]
        if host:
            lines.append(b"Host: node")
        lines += [k.encode("latin-1") + b": " + v.encode("latin-1", "replace") for k, v in hdrs]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""])
    framed = st.builds(
        build, methods, targets, versions, st.sampled_from([True, True, True, False]),
        headers, st.binary(max_size=300),
    )  # fmt: skip
    # well-formed requests for what exists, with hostile headers: reach the 200/206 paths
    real = st.sampled_from(
        [f"/v2/{image.name}/blobs/{d}" for d in image.blobs]
        + [f"/v2/{image.name}/manifests/{r}" for r in (image.digest, "v1")]
    )
    real_targets = st.builds(
        lambda p, ns: (p + (f"?ns={ns}" if ns else "")).encode(),
        real, st.sampled_from([None, origin, "docker.io"]),
    )  # fmt: skip
    plausible = st.builds(
        build, st.sampled_from(["GET", "HEAD"]), real_targets, st.just(b"HTTP/1.1"),
        st.just(True), headers, st.just(b""),
    )  # fmt: skip
    return st.one_of(plausible, plausible, framed, framed, st.binary(max_size=600))


def _exchange(host: str, port: int, request: bytes) -> bytes:
    """Send one request, half-close, read everything the node says until it closes."""
    with socket.create_connection((host, port), timeout=30) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the node hung up early: a dropped connection, allowed
        chunks = []
        try:
            while data := sock.recv(1 << 16):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _check(request: bytes, reply: bytes) -> str:
    """Assert the reply is acceptable; returns its class ("2xx" ... or "dropped")."""
    if not reply:
        return "dropped"
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), reply[:200]
    status = int(status_line.split(b" ")[1])
    assert status != 500, (request[:300], reply[:500])
    assert 200 <= status < 600
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if status >= 400 and not request.startswith(b"HEAD "):
        length = int(headers.get(b"content-length", b"-1"))
        if length > 0:
            errors = json.loads(body[:length])["errors"]
            assert isinstance(errors, list)
            assert errors
            assert isinstance(errors[0]["code"], str)
            if status >= 500:
                # 503: an origin we cannot reach; 501: a transfer coding we do not
                # implement (RFC 9112 section 6.1 asks for exactly that)
                assert (status, errors[0]["code"]) in (
                    (503, "UNAVAILABLE"),
                    (503, "TOOMANYREQUESTS"),
                    (501, "UNSUPPORTED"),
                ), (request[:300], reply[:500])
    return f"{status // 100}xx"


def test_registry_endpoint_survives_hostile_requests(target: Target, error_log: ErrorLog) -> None:
    blob = next(iter(target.image.blobs))
    probe = f"{target.node.value.url}/v2/{target.image.name}/blobs/{blob}"
    http = httpx.Client(timeout=30, trust_env=False)

    @FUZZ
    @given(request=_requests(target.image, target.origin))
    def case(request: bytes) -> None:
        CASES["registry endpoint"] += 1
        CASES[
            "registry endpoint: " + _check(request, _exchange(target.host, target.port, request))
        ] += 1
        assert target.node.alive()

    try:
        case()
        # still serving, byte for byte
        assert http.get(probe).content == target.image.blobs[blob]
    finally:
        http.close()
