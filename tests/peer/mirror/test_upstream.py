"""peer.mirror.upstream against real parts, and a scripted origin for what they cannot do.

* A real ``docker-registry`` (distribution 2.8) of this module's own, open and behind
  htpasswd: manifests by tag and digest, Accept forwarding, blobs, ranges, 404s, Basic auth.
* A real h11 server on loopback for what only sockets show: pooled connections being
  reused after redirects and error bodies, and a body cut short by the peer.
* ``httpx.MockTransport`` for the Bearer dance, cross-host redirects, 429/5xx, lying
  digests and the like, where every request is recorded and asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from shutil import which

import h11
import httpx
import pytest
import trio
import trio.testing

import peer
from peer.errors import (
    IntegrityError,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from peer.mirror.upstream import (
    DEFAULT_MANIFEST_ACCEPT,
    MAX_MANIFEST_SIZE,
    MAX_REDIRECTS,
    Upstream,
    default_upstream_url,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# bcrypt("s3cret"), made once with libxcrypt: the tests need no bcrypt package.
HTPASSWD = "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"
CREDS = ("alice", "s3cret")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- real registry


@dataclass
class Image:
    repo: str
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


class Distribution:
    """A private ``docker-registry serve`` on a free loopback port, with one pushed image."""

    def __init__(self, root: Path, *, htpasswd: bool = False) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        auth = ""
        if htpasswd:
            (root / "htpasswd").write_text(HTPASSWD)
            auth = f"auth:\n  htpasswd:\n    realm: lab\n    path: {root / 'htpasswd'}\n"
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
        )
        self._proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._http = httpx.Client(base_url=self.url, auth=CREDS if htpasswd else None)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self._http.get("/v2/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("docker-registry did not come up")
            time.sleep(0.05)

    def push_blob(self, repo: str, data: bytes) -> str:
        started = self._http.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        # not params=: httpx would re-encode the opaque _state token ('+' becomes ' ')
        location = started.headers["location"]
        location += ("&" if "?" in location else "?") + f"digest={sha256(data)}"
        done = self._http.put(location, content=data)
        assert done.status_code == 201, done.text
        return sha256(data)

    def push_image(self, repo: str, tag: str) -> Image:
        layer = os.urandom(300_000)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": self.push_blob(repo, config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": self.push_blob(repo, layer),
                        "size": len(layer),
                    }
                ],
            },
            indent=3,  # odd formatting: any re-serialisation would change the digest
        ).encode()
        put = self._http.put(
            f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert put.status_code == 201, put.text
        return Image(repo, layer, manifest)

    def close(self) -> None:
        self._http.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Lab:
    open: Distribution
    locked: Distribution
    image: Image  # on `open`, as lab/app:v1
    hub_image: Image  # on `open`, as library/alpine:3 (for the docker.io mapping)
    locked_image: Image


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if which("docker-registry") is None:
        pytest.skip("needs docker-registry (apt-get install docker-registry)")
    opened = Distribution(tmp_path_factory.mktemp("open"))
    try:
        locked = Distribution(tmp_path_factory.mktemp("locked"), htpasswd=True)
        try:
            yield Lab(
                opened,
                locked,
                opened.push_image("lab/app", "v1"),
                opened.push_image("library/alpine", "3"),
                locked.push_image("private/app", "v1"),
            )
        finally:
            locked.close()
    finally:
        opened.close()


@asynccontextmanager
async def opened(upstream: Upstream) -> AsyncIterator[Upstream]:
    try:
        yield upstream
    finally:
        await upstream.aclose()


def lab_upstream(lab: Lab, credentials: Mapping[str, tuple[str, str]] | None = None) -> Upstream:
    registries = {"lab": lab.open.url, "docker.io": lab.open.url, "locked": lab.locked.url}
    return Upstream(registries, credentials=credentials)


async def read_all(
    upstream: Upstream,
    registry: str,
    repo: str,
    digest: str,
    start: int = 0,
    end: int | None = None,
) -> tuple[int, int, bytes]:
    """Open, read and close a blob: (start, size, body)."""
    async with upstream.open_blob(registry, repo, digest, start=start, end=end) as blob:
        body = b"".join([chunk async for chunk in blob.chunks()])
        assert len(body) == blob.length
        return blob.start, blob.size, body


async def test_manifest_by_tag_and_digest_against_distribution(lab: Lab) -> None:
    image = lab.image
    async with opened(lab_upstream(lab)) as up:
        meta = await up.head_manifest("lab", image.repo, "v1", [OCI_MANIFEST, DOCKER_V2])
        assert (meta.digest, meta.media_type, meta.size) == (
            image.digest,
            OCI_MANIFEST,
            len(image.manifest),
        )
        by_tag = await up.get_manifest("lab", image.repo, "v1", [OCI_MANIFEST])
        assert (by_tag.body, by_tag.digest, by_tag.media_type) == (
            image.manifest,
            image.digest,
            OCI_MANIFEST,
        )
        by_digest = await up.get_manifest("lab", image.repo, image.digest, [OCI_MANIFEST])
        assert by_digest == by_tag
        assert (await up.head_manifest("lab", image.repo, image.digest, [OCI_MANIFEST])) == meta


async def test_accept_is_forwarded_to_distribution(lab: Lab) -> None:
    # distribution answers an OCI manifest by tag with 404 when Accept lacks OCI (§1.5)
    async with opened(lab_upstream(lab)) as up:
        with pytest.raises(UpstreamNotFound, match="MANIFEST_UNKNOWN"):
            await up.get_manifest("lab", lab.image.repo, "v1", [DOCKER_V2])
        # an empty list means our modern default list, which includes OCI
        assert (await up.get_manifest("lab", lab.image.repo, "v1", [])).digest == lab.image.digest


async def test_docker_hub_names_get_library_prefix(lab: Lab) -> None:
    async with opened(lab_upstream(lab)) as up:
        for registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            for repo in ("alpine", "library/alpine"):
                meta = await up.head_manifest(registry, repo, "3", [OCI_MANIFEST])
                assert meta.digest == lab.hub_image.digest
        with pytest.raises(UpstreamNotFound):  # not rewritten for other registries
            await up.head_manifest("lab", "alpine", "3", [OCI_MANIFEST])


@pytest.mark.parametrize(
    ("repo", "ref"),
    [
        ("lab/app", "nope"),
        ("lab/missing", "v1"),
        ("lab/app", sha256(b"not a manifest")),
    ],
)
async def test_missing_manifests_are_not_found(lab: Lab, repo: str, ref: str) -> None:
    async with opened(lab_upstream(lab)) as up:
        with pytest.raises(UpstreamNotFound) as head:
            await up.head_manifest("lab", repo, ref, [OCI_MANIFEST])
        with pytest.raises(UpstreamNotFound) as get:
            await up.get_manifest("lab", repo, ref, [OCI_MANIFEST])
    assert head.value.status == get.value.status == 404


async def test_blobs_and_ranges_against_distribution(lab: Lab) -> None:
    layer = lab.image.layer
    digest = sha256(layer)
    size = len(layer)
    async with opened(lab_upstream(lab)) as up:
        assert await up.head_blob("lab", "lab/app", digest) == size
        assert await read_all(up, "lab", "lab/app", digest) == (0, size, layer)
        assert await read_all(up, "lab", "lab/app", digest, start=1000, end=1999) == (
            1000,
            size,
            layer[1000:2000],
        )
        assert await read_all(up, "lab", "lab/app", digest, start=size - 10) == (
            size - 10,
            size,
            layer[-10:],
        )
        assert await read_all(up, "lab", "lab/app", digest, end=0) == (0, size, layer[:1])
        with pytest.raises(UpstreamNotFound):
            await up.head_blob("lab", "lab/app", sha256(b"missing"))
        with pytest.raises(UpstreamNotFound):
            await read_all(up, "lab", "lab/app", sha256(b"missing"))
        with pytest.raises(UpstreamProtocolError) as unsatisfiable:
            await read_all(up, "lab", "lab/app", digest, start=size + 5)
        assert unsatisfiable.value.status == 416
        with pytest.raises(ValueError, match="range"):
            up.open_blob("lab", "lab/app", digest, start=5, end=4)


async def test_basic_auth_against_distribution(lab: Lab) -> None:
    image = lab.locked_image
    async with opened(lab_upstream(lab, credentials={"locked": CREDS})) as up:
        assert (await up.get_manifest("locked", image.repo, "v1", [OCI_MANIFEST])).body == (
            image.manifest
        )
        assert await read_all(up, "locked", image.repo, sha256(image.layer)) == (
            0,
            len(image.layer),
            image.layer,
        )
    for credentials in ({}, {"locked": ("alice", "wrong")}):
        async with opened(lab_upstream(lab, credentials=credentials)) as up:
            with pytest.raises(UpstreamDenied) as denied:
                await up.head_manifest("locked", image.repo, "v1", [OCI_MANIFEST])
            assert denied.value.status == 401


# ------------------------------------------------------------------- real loopback server


@dataclass
class H11Origin:
    """A keep-alive HTTP/1.1 origin on loopback that counts the connections it accepts."""

    url: str = ""
    connections: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    continue
                assert conn.next_event() == h11.EndOfMessage()  # GET and HEAD have no body
                status, headers, body, cut = self._route(event.method, event.target.decode())
                headers = [*headers, (b"content-length", str(len(body)).encode())]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                if event.method != b"HEAD":
                    await stream.send_all(conn.send(h11.Data(data=body[:cut])))
                if cut < len(body):
                    return  # hang up mid-body
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()

    def _route(
        self, method: bytes, target: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, int]:
        error = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "x" * 2000}]})
        if target.endswith("/missing"):
            return 404, [], error.encode(), 99999
        if target.endswith("/moved"):
            return 307, [(b"location", b"/v2/r/blobs/data")], b"see other" * 100, 99999
        if target.endswith("/short"):
            return 200, [], b"y" * 5000, 1000
        return 200, [], b"z" * 4096, 99999


async def test_pooled_connection_is_reused_after_redirects_and_errors(
    nursery: trio.Nursery,
) -> None:
    origin = H11Origin()
    await nursery.start(origin.serve)
    async with opened(Upstream({"h": origin.url})) as up:
        for _ in range(3):
            assert await up.head_blob("h", "r", "data") == 4096
            assert await up.head_blob("h", "r", "moved") == 4096
            assert (await read_all(up, "h", "r", "moved"))[2] == b"z" * 4096
            with pytest.raises(UpstreamNotFound):
                await up.head_blob("h", "r", "missing")
            with pytest.raises(UpstreamNotFound, match="BLOB_UNKNOWN"):  # error body was read
                await read_all(up, "h", "r", "missing")
    assert origin.connections == 1


async def test_body_cut_short_by_the_peer_is_unavailable(nursery: trio.Nursery) -> None:
    origin = H11Origin()
    await nursery.start(origin.serve)
    async with opened(Upstream({"h": origin.url})) as up:
        with pytest.raises(UpstreamUnavailable) as cut:
            await read_all(up, "h", "r", "short")
        assert isinstance(cut.value.__cause__, httpx.TransportError)  # h11 noticed, we mapped
        assert await up.head_blob("h", "r", "data") == 4096  # and the client still works
    assert origin.connections == 2


async def test_connection_refused_is_unavailable() -> None:
    async with opened(Upstream({"gone": f"http://127.0.0.1:{_free_port()}"})) as up:
        with pytest.raises(UpstreamUnavailable):
            await up.head_blob("gone", "r", sha256(b""))


# -------------------------------------------------------------------------- scripted origin

REG = "https://reg.example.test"
AUTH = "https://auth.example.test/token"
Handler = Callable[[httpx.Request], httpx.Response]


class Scripted:
    """Origins behind ``httpx.MockTransport``; records each request as a short line."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.handler(request)
        if isinstance(response.stream, httpx.ByteStream):  # stream it, as a socket would
            headers = response.headers
            return httpx.Response(
                response.status_code, headers=headers, stream=body_stream(response.content)
            )
        return response

    def upstream(self, credentials: Mapping[str, tuple[str, str]] | None = None) -> Upstream:
        transport = httpx.MockTransport(self)
        return Upstream({"reg.example.test": REG}, credentials=credentials, transport=transport)

    def lines(self) -> list[str]:
        return [
            f"{r.method} {r.url.host}{r.url.path} {r.headers.get('authorization', '-')}"
            for r in self.requests
        ]


MANIFEST = b'{"schemaVersion": 2, "mediaType": "%s"}' % OCI_MANIFEST.encode()


def manifest_ok(request: httpx.Request, body: bytes = MANIFEST) -> httpx.Response:
    headers = {
        "Content-Type": OCI_MANIFEST + "; charset=utf-8",
        "Docker-Content-Digest": sha256(body),
        "Content-Length": str(len(body)),
    }
    return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)


def challenge(realm: str = AUTH, scope: str = "repository:team/app:pull") -> httpx.Response:
    value = f'Bearer realm="{realm}",service="reg",scope="{scope}"'
    return httpx.Response(401, headers={"WWW-Authenticate": value}, json={"errors": []})


def token_server(request: httpx.Request, expires_in: int = 300) -> httpx.Response:
    scopes = "+".join(request.url.params.get_list("scope"))
    return httpx.Response(200, json={"token": f"T[{scopes}]", "expires_in": expires_in})


def bearer_origin(ok: Handler = manifest_ok, *, expires_in: int = 300) -> Scripted:
    """reg.example.test wants ``Bearer T[<its pull scope>]``; auth.example.test mints it."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            return token_server(request, expires_in)
        if request.url.host == "reg.example.test":
            repo = "/".join(request.url.path.split("/")[2:4])
            if request.headers.get("authorization") != f"Bearer T[repository:{repo}:pull]":
                return challenge(scope=f"repository:{repo}:pull")
        return ok(request)

    return Scripted(handle)


async def test_bearer_dance_then_cached_token() -> None:
    origin = bearer_origin()
    async with opened(origin.upstream()) as up:
        manifest = await up.get_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        assert (manifest.body, manifest.media_type) == (MANIFEST, OCI_MANIFEST)
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        await up.head_manifest("reg.example.test", "team/other", "v1", [OCI_MANIFEST])
    token = origin.requests[1]
    assert token.url.params.get_list("service") == ["reg"]
    assert token.url.params.get_list("scope") == ["repository:team/app:pull"]
    assert origin.lines() == [
        "GET reg.example.test/v2/team/app/manifests/v1 -",
        "GET auth.example.test/token -",  # anonymous
        "GET reg.example.test/v2/team/app/manifests/v1 Bearer T[repository:team/app:pull]",
        "HEAD reg.example.test/v2/team/app/manifests/v1 Bearer T[repository:team/app:pull]",
        # known challenge: a token for the new scope is fetched before asking, no 401
        "GET auth.example.test/token -",
        "HEAD reg.example.test/v2/team/other/manifests/v1 Bearer T[repository:team/other:pull]",
    ]
    first = origin.requests[0]
    assert first.headers["user-agent"] == f"shoal/{peer.__version__}"
    assert first.headers["accept-encoding"] == "identity"
    assert first.headers["accept"] == OCI_MANIFEST


async def test_tokens_expire_on_the_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    origin = bearer_origin(expires_in=120)
    async with opened(origin.upstream()) as up:
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        await trio.sleep(100)
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        await trio.sleep(20)  # 120 s in: inside the expiry margin
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
    hosts = [line.split()[1].split("/")[0] for line in origin.lines()]
    assert hosts == ["reg.example.test", "auth.example.test"] + ["reg.example.test"] * 2 + [
        "auth.example.test",
        "reg.example.test",
    ]


async def test_concurrent_requests_share_one_token_fetch() -> None:
    seen: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "auth.example.test":
            await trio.sleep(0.05)  # everyone else queues up behind this fetch
            return token_server(request)
        if "authorization" not in request.headers:
            return challenge()
        return manifest_ok(request)

    up = Upstream({"reg.example.test": REG}, transport=httpx.MockTransport(handle))
    async with opened(up), trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(up.head_manifest, "reg.example.test", "team/app", "v1", [])
    assert seen.count("auth.example.test") == 1
    assert 5 < seen.count("reg.example.test") <= 10  # late starters skip the 401


async def test_rejected_cached_token_is_replaced_once() -> None:
    minted: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            minted.append(f"T{len(minted)}")
            return httpx.Response(200, json={"access_token": minted[-1]})
        if request.headers.get("authorization") != f"Bearer {minted[-1] if minted else ''}":
            return challenge()
        if len(minted) == 1 and request.url.path.endswith("/revoked"):
            return challenge()  # the server forgot T0
        return manifest_ok(request)

    origin = Scripted(handle)
    async with opened(origin.upstream()) as up:
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        await up.head_manifest("reg.example.test", "team/app", "revoked", [OCI_MANIFEST])
    assert minted == ["T0", "T1"]
    assert [line.split()[-1] for line in origin.lines()] == ["-", "-", "T0", "T0", "-", "T1"]


@pytest.mark.parametrize(
    ("realm", "sent"),
    [
        (AUTH, "Basic dTpw"),  # same registrable domain: credentials go to the realm
        ("https://auth.elsewhere.test/token", "-"),  # elsewhere: anonymous
        ("http://auth.example.test/token", "-"),  # downgrade to plain http: anonymous
    ],
)
async def test_credentials_only_go_to_realms_in_the_domain(realm: str, sent: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return token_server(request)
        if "authorization" not in request.headers:
            return challenge(realm=realm)
        return manifest_ok(request)

    origin = Scripted(handle)
    async with opened(origin.upstream(credentials={"reg.example.test": ("u", "p")})) as up:
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
    assert origin.lines()[1].endswith(f"/token {sent}")


async def test_basic_challenge_with_and_without_credentials() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == "Basic dTpw":
            return manifest_ok(request)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    origin = Scripted(handle)
    async with opened(origin.upstream(credentials={"reg.example.test": ("u", "p")})) as up:
        await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
        await up.head_manifest("reg.example.test", "team/app", "v2", [OCI_MANIFEST])
    assert [line.split(" ", 2)[2] for line in origin.lines()] == ["-", "Basic dTpw", "Basic dTpw"]
    origin.requests.clear()
    async with opened(origin.upstream()) as up:
        with pytest.raises(UpstreamDenied):
            await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
    assert len(origin.requests) == 1  # nothing to answer a Basic challenge with: no retry


async def test_docker_hub_defaults_and_its_401_for_unknown_repositories() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.docker.io":
            return token_server(request)
        scope = "repository:library/nosuch:pull"
        return challenge("https://auth.docker.io/token", scope)  # even with a token

    origin = Scripted(handle)
    up = Upstream(transport=httpx.MockTransport(origin))
    assert up.url_for("index.docker.io") == default_upstream_url("docker.io")
    assert up.url_for("ghcr.io") == "https://ghcr.io"
    async with opened(up):
        with pytest.raises(UpstreamNotFound) as hub:
            await up.head_manifest("docker.io", "nosuch", "latest", [OCI_MANIFEST])
        # the same answer from any other registry is a denial
        origin.handler = lambda r: token_server(r) if r.url.path == "/token" else challenge()
        with pytest.raises(UpstreamDenied):
            await up.head_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
    assert hub.value.status == 401
    assert str(origin.requests[0].url) == (
        "https://registry-1.docker.io/v2/library/nosuch/manifests/latest"
    )
    assert origin.requests[1].url.params.get_list("scope") == ["repository:library/nosuch:pull"]


async def test_redirects_keep_the_method_and_drop_authorization_across_hosts() -> None:
    layer = b"layer bytes" * 100

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example.test":
            assert request.url.params["sig"] == "abc"
            if request.method == "HEAD":
                return httpx.Response(200, headers={"Content-Length": str(len(layer))})
            return httpx.Response(200, content=layer)
        if request.url.path.endswith("/blobs/sha256:aa"):
            return httpx.Response(302, headers={"Location": "/v2/team/app/blobs/sha256:bb"})
        return httpx.Response(307, headers={"Location": "https://cdn.example.test/b?sig=abc"})

    origin = bearer_origin(handle)
    async with opened(origin.upstream()) as up:
        assert await up.head_blob("reg.example.test", "team/app", "sha256:aa") == len(layer)
        assert (await read_all(up, "reg.example.test", "team/app", "sha256:aa"))[2] == layer
    token = "Bearer T[repository:team/app:pull]"
    assert origin.lines() == [
        "HEAD reg.example.test/v2/team/app/blobs/sha256:aa -",
        "GET auth.example.test/token -",
        f"HEAD reg.example.test/v2/team/app/blobs/sha256:aa {token}",
        f"HEAD reg.example.test/v2/team/app/blobs/sha256:bb {token}",  # relative, same host
        "HEAD cdn.example.test/b -",
        # the redirect target is not cached: the GET asks the registry again
        f"GET reg.example.test/v2/team/app/blobs/sha256:aa {token}",
        f"GET reg.example.test/v2/team/app/blobs/sha256:bb {token}",
        "GET cdn.example.test/b -",
    ]


async def test_redirect_to_another_registry_gets_its_own_token() -> None:
    # lscr.io -> ghcr.io (E14): the far side challenges with its own realm
    def handle(request: httpx.Request) -> httpx.Response:
        host, auth = request.url.host, request.headers.get("authorization")
        if host == "auth.example.test":
            return token_server(request)
        if host == "ghcr.example.org" and request.url.path == "/token":
            return httpx.Response(200, json={"token": "G", "expires_in": 300})
        if host == "ghcr.example.org":
            if auth != "Bearer G":
                return challenge("https://ghcr.example.org/token", "repository:mirror/app:pull")
            return manifest_ok(request)
        if auth is None:
            return challenge()
        return httpx.Response(307, headers={"Location": "https://ghcr.example.org/v2/mirror/x"})

    origin = Scripted(handle)
    async with opened(origin.upstream(credentials={"reg.example.test": ("u", "p")})) as up:
        await up.get_manifest("reg.example.test", "team/app", "v1", [OCI_MANIFEST])
    assert origin.lines()[3:] == [
        "GET ghcr.example.org/v2/mirror/x -",
        "GET ghcr.example.org/token -",  # our credentials stay home
        "GET ghcr.example.org/v2/mirror/x Bearer G",
    ]
    assert origin.requests[4].url.params.get_list("scope") == [
        "repository:mirror/app:pull",
        "repository:team/app:pull",
    ]


@pytest.mark.parametrize(("hops", "ok"), [(MAX_REDIRECTS, True), (MAX_REDIRECTS + 1, False)])
async def test_redirect_limit(hops: int, ok: bool) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("n", "0"))
        if n < hops:
            return httpx.Response(308, headers={"Location": f"https://h{n}.test/x?n={n + 1}"})
        return httpx.Response(200, content=b"abc")

    async with opened(Scripted(handle).upstream()) as up:
        if ok:
            assert await up.head_blob("reg.example.test", "r", "sha256:aa") == 3
        else:
            with pytest.raises(UpstreamProtocolError, match="redirects"):
                await up.head_blob("reg.example.test", "r", "sha256:aa")


@pytest.mark.parametrize(
    ("response", "error", "status"),
    [
        (httpx.Response(404), UpstreamNotFound, 404),
        (httpx.Response(403), UpstreamDenied, 403),
        (httpx.Response(401), UpstreamDenied, 401),  # no challenge at all
        (httpx.Response(500), UpstreamUnavailable, 500),
        (httpx.Response(503, text="<html>"), UpstreamUnavailable, 503),
        (httpx.Response(400), UpstreamProtocolError, 400),
        (httpx.Response(302), UpstreamProtocolError, None),  # no Location
        (httpx.Response(307, headers={"Location": "ftp://x/"}), UpstreamProtocolError, None),
        (httpx.Response(204), UpstreamProtocolError, None),  # HEAD fine, but no size
        (
            httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="x'}),
            UpstreamProtocolError,
            None,
        ),
        (
            httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="/t"'}),
            UpstreamProtocolError,
            None,
        ),
    ],
)
async def test_status_mapping(
    response: httpx.Response, error: type[UpstreamError], status: int | None
) -> None:
    async with opened(Scripted(lambda _: response).upstream()) as up:
        with pytest.raises(error) as raised:
            await up.head_blob("reg.example.test", "r", "sha256:aa")
    assert type(raised.value) is error
    assert raised.value.status == status


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("42", 42.0),
        (None, None),
        ("soon", None),
        ("<an HTTP-date an hour from now>", 3600),
    ],
)
async def test_rate_limit(retry_after: str | None, expected: float | None) -> None:
    headers = {"ratelimit-remaining": "0;w=21600"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after == "<an HTTP-date an hour from now>":
        headers["Retry-After"] = formatdate(time.time() + 3600, usegmt=True)
    async with opened(Scripted(lambda _: httpx.Response(429, headers=headers)).upstream()) as up:
        with pytest.raises(UpstreamRateLimited) as limited:
            await up.get_manifest("reg.example.test", "r", "v1", [OCI_MANIFEST])
        assert up.last_ratelimit == {"reg.example.test": "0;w=21600"}
    if expected is None:
        assert limited.value.retry_after is None
    else:
        assert limited.value.retry_after == pytest.approx(expected, abs=5)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("garbage"),
    ],
)
async def test_transport_errors_are_unavailable(exc: httpx.HTTPError) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    async with opened(Scripted(handle).upstream()) as up:
        with pytest.raises(UpstreamUnavailable) as raised:
            await up.get_manifest("reg.example.test", "r", "v1", [OCI_MANIFEST])
    assert raised.value.__cause__ is exc


async def test_token_endpoint_failures() -> None:
    cases: list[tuple[httpx.Response, type[UpstreamError]]] = [
        (httpx.Response(401), UpstreamDenied),
        (httpx.Response(503), UpstreamUnavailable),
        (httpx.Response(429, headers={"Retry-After": "7"}), UpstreamRateLimited),
        (httpx.Response(200, text="not json"), UpstreamProtocolError),
        (httpx.Response(200, json={"expires_in": 60}), UpstreamProtocolError),
    ]
    for token_response, error in cases:

        def handle(
            request: httpx.Request, answer: httpx.Response = token_response
        ) -> httpx.Response:
            return answer if request.url.host == "auth.example.test" else challenge()

        async with opened(Scripted(handle).upstream()) as up:
            with pytest.raises(error):
                await up.head_blob("reg.example.test", "team/app", "sha256:aa")


def body_stream(*parts: bytes | Exception) -> httpx.AsyncByteStream:
    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for part in parts:
                if isinstance(part, Exception):
                    raise part
                yield part

    return Stream()


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ((b"a" * 50,), UpstreamUnavailable),  # ends short of Content-Length
        ((b"a" * 50, httpx.ReadError("reset")), UpstreamUnavailable),
        ((b"a" * 50, httpx.ReadTimeout("slow")), UpstreamUnavailable),
        ((b"a" * 60, b"a" * 60), UpstreamProtocolError),  # runs past it
    ],
)
async def test_broken_blob_bodies(
    parts: tuple[bytes | Exception, ...], error: type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "100"}, stream=body_stream(*parts))

    async with opened(Scripted(handle).upstream()) as up:
        with pytest.raises(error):
            await read_all(up, "reg.example.test", "r", "sha256:aa")


async def read_into(upstream: Upstream, digest: str, size: int) -> bytes:
    """Read a blob with BlobResponse.readinto, through a buffer of ``size`` bytes."""
    async with upstream.open_blob("reg.example.test", "r", digest) as blob:
        got = bytearray()
        buffer = bytearray(size)
        while n := await blob.readinto(memoryview(buffer)):
            got += buffer[:n]
        return bytes(got)


@pytest.mark.parametrize("size", [1, 33, 1000])
async def test_readinto_without_the_lean_transport(size: int) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        parts = (b"a" * 50, b"b" * 50)
        return httpx.Response(200, headers={"Content-Length": "100"}, stream=body_stream(*parts))

    async with opened(Scripted(handle).upstream()) as up:
        assert await read_into(up, "sha256:aa", size) == b"a" * 50 + b"b" * 50


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ((b"a" * 50,), UpstreamUnavailable),
        ((b"a" * 50, httpx.ReadError("reset")), UpstreamUnavailable),
        ((b"a" * 60, b"a" * 60), UpstreamProtocolError),
    ],
)
async def test_readinto_of_broken_bodies(
    parts: tuple[bytes | Exception, ...], error: type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "100"}, stream=body_stream(*parts))

    async with opened(Scripted(handle).upstream()) as up:
        with pytest.raises(error):
            await read_into(up, "sha256:aa", 1000)


async def test_blob_bodies_are_raw_and_chunked_size_comes_from_head() -> None:
    gz = b"\x1f\x8b\x08\x00not really gzip"

    def handle(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Encoding": "gzip"}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers | {"Content-Length": str(len(gz))})
        return httpx.Response(200, headers=headers, stream=body_stream(gz[:5], gz[5:]))  # chunked

    origin = Scripted(handle)
    async with opened(origin.upstream()) as up:
        assert await read_all(up, "reg.example.test", "r", "sha256:aa") == (0, len(gz), gz)
    assert [r.method for r in origin.requests] == ["GET", "HEAD"]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        # a 200 to a range request: reported from 0, the caller skips
        (200, {"Content-Length": "1000"}, (0, 1000, 1000)),
        (206, {"Content-Range": "bytes 100-199/1000", "Content-Length": "100"}, (100, 1000, 100)),
        (206, {"Content-Range": "bytes 100-149/1000"}, (100, 1000, 50)),  # shorter is allowed
        # each bad answer below is consistent but for the one thing it gets wrong
        (206, {"Content-Range": "bytes 0-99/1000", "Content-Length": "100"}, UpstreamProtocolError),
        (
            206,
            {"Content-Range": "bytes 100-299/1000", "Content-Length": "200"},
            UpstreamProtocolError,
        ),
        (206, {"Content-Range": "bytes 100-199/*", "Content-Length": "100"}, UpstreamProtocolError),
        (
            206,
            {"Content-Range": "bytes 100-199/1000", "Content-Length": "5"},
            UpstreamProtocolError,
        ),
        (206, {}, UpstreamProtocolError),
    ],
)
async def test_range_answers(
    status: int, headers: dict[str, str], expected: tuple[int, int, int] | type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["range"] == "bytes=100-199"
        n = int(headers.get("Content-Length", "50"))
        return httpx.Response(status, headers=headers, content=b"r" * n)

    async with opened(Scripted(handle).upstream()) as up:
        opening = up.open_blob("reg.example.test", "r", "sha256:aa", start=100, end=199)
        if isinstance(expected, tuple):
            async with opening as blob:
                assert (blob.start, blob.size, blob.length) == expected
        else:
            with pytest.raises(expected):
                async with opening:
                    pass


async def test_open_ended_range_past_the_size_is_refused() -> None:
    headers = {"Content-Range": "bytes 100-1000/1000", "Content-Length": "901"}
    origin = Scripted(lambda _: httpx.Response(206, headers=headers, content=b"r" * 901))
    async with opened(origin.upstream()) as up:
        with pytest.raises(UpstreamProtocolError, match="Content-Range"):
            await read_all(up, "reg.example.test", "r", "sha256:aa", start=100)
    assert origin.requests[0].headers["range"] == "bytes=100-"


async def test_no_range_header_for_whole_blobs() -> None:
    origin = Scripted(lambda _: httpx.Response(200, content=b"abc"))
    async with opened(origin.upstream()) as up:
        await read_all(up, "reg.example.test", "r", "sha256:aa")
        await read_all(up, "reg.example.test", "r", "sha256:aa", start=0, end=None)
    assert all("range" not in r.headers for r in origin.requests)


SHA512 = "sha512:" + hashlib.sha512(MANIFEST).hexdigest()


@pytest.mark.parametrize(
    ("ref", "body", "headers", "expected"),
    [
        ("v1", MANIFEST, {}, sha256(MANIFEST)),
        (sha256(MANIFEST), MANIFEST, {}, sha256(MANIFEST)),
        (SHA512, MANIFEST, {}, SHA512),
        ("v1", MANIFEST, {"Docker-Content-Digest": SHA512}, sha256(MANIFEST)),
        (sha256(MANIFEST), MANIFEST + b" ", {}, IntegrityError),  # body not what we asked for
        (SHA512, MANIFEST + b" ", {}, IntegrityError),
        ("v1", MANIFEST, {"Docker-Content-Digest": sha256(b"other")}, IntegrityError),
        ("v1", MANIFEST, {"Docker-Content-Digest": "sha256:zz"}, IntegrityError),
        ("md5:" + "0" * 32, MANIFEST, {}, UpstreamProtocolError),  # cannot verify
        ("sha256:" + "A" * 64, MANIFEST, {}, UpstreamProtocolError),  # uppercase hex
        ("v1", MANIFEST, {"Content-Type": ""}, UpstreamProtocolError),
        ("v1", b" " * (MAX_MANIFEST_SIZE + 1), {}, UpstreamProtocolError),
    ],
)
async def test_manifest_verification(
    ref: str, body: bytes, headers: dict[str, str], expected: str | type[Exception]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST} | headers, content=body)

    async with opened(Scripted(handle).upstream()) as up:
        if isinstance(expected, str):
            manifest = await up.get_manifest("reg.example.test", "r", ref, [OCI_MANIFEST])
            assert (manifest.body, manifest.digest) == (body, expected)
        else:
            with pytest.raises(expected):
                await up.get_manifest("reg.example.test", "r", ref, [OCI_MANIFEST])


async def test_oversized_manifest_without_content_length() -> None:
    big = body_stream(*[b" " * 1_000_000] * 5)
    origin = Scripted(lambda _: httpx.Response(200, stream=big))
    async with opened(origin.upstream()) as up:
        with pytest.raises(UpstreamProtocolError, match="over"):
            await up.get_manifest("reg.example.test", "r", "v1", [OCI_MANIFEST])


@pytest.mark.parametrize(
    "head",
    [
        {"Content-Length": str(len(MANIFEST))},  # no digest
        {"Docker-Content-Digest": sha256(MANIFEST)},  # no length
        {"Docker-Content-Digest": "bogus", "Content-Length": "5"},
        {"Docker-Content-Digest": sha256(MANIFEST), "Content-Length": "0"},
        405,  # HEAD not allowed
    ],
)
async def test_head_manifest_falls_back_to_get(head: dict[str, str] | int) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return manifest_ok(request)
        if isinstance(head, int):
            return httpx.Response(head)
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST} | head)

    origin = Scripted(handle)
    async with opened(origin.upstream()) as up:
        meta = await up.head_manifest("reg.example.test", "r", "v1", [DOCKER_V2, OCI_MANIFEST])
    assert (meta.digest, meta.media_type, meta.size) == (
        sha256(MANIFEST),
        OCI_MANIFEST,
        len(MANIFEST),
    )
    assert [r.method for r in origin.requests] == ["HEAD", "GET"]
    assert origin.requests[1].headers["accept"] == f"{DOCKER_V2}, {OCI_MANIFEST}"


async def test_head_manifest_trusts_a_complete_head() -> None:
    origin = Scripted(manifest_ok)
    async with opened(origin.upstream()) as up:
        meta = await up.head_manifest("reg.example.test", "r", "v1", [])
    assert (meta.digest, meta.media_type, meta.size) == (
        sha256(MANIFEST),
        OCI_MANIFEST,
        len(MANIFEST),
    )
    assert [r.method for r in origin.requests] == ["HEAD"]
    assert origin.requests[0].headers["accept"] == ", ".join(DEFAULT_MANIFEST_ACCEPT)


async def test_accept_lines_a_header_cannot_carry_are_dropped() -> None:
    """h11 admits latin-1 bytes in a client's Accept; httpx cannot send them (found by
    tests/fuzz/test_registry.py: a 500 for ``Accept: \\x80``)."""
    origin = Scripted(manifest_ok)
    async with opened(origin.upstream()) as up:
        await up.get_manifest("reg.example.test", "r", "v1", ["\x80", OCI_MANIFEST, "a\x01"])
        await up.get_manifest("reg.example.test", "r", "v1", ["\x80"])
    assert origin.requests[0].headers["accept"] == OCI_MANIFEST
    assert origin.requests[1].headers["accept"] == ", ".join(DEFAULT_MANIFEST_ACCEPT)
