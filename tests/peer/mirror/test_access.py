"""Private registries (peer.mirror.access): pure tables for the pieces, then a node in front
of a real ``docker-registry`` behind htpasswd — the client with good credentials pulls,
the ones without or with wrong ones get 401, and nothing the node holds leaks."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from peer.cli import _peer_parser
from peer.config import PEER_FLAGS, PeerConfig, merged, peer_config
from peer.errors import ConfigError
from peer.mirror.access import CHALLENGE, AccessCache, Refusal, parse_basic
from peer.mirror.credentials import load_credentials_file, parse_credentials
from tests.helpers import procs
from tests.helpers.images import PushedImage
from tests.helpers.node import Node, running_node
from tests.helpers.registry import PASSWORD, USER, Registry
from tests.helpers.runtimes import Skopeo

PRIVATE = "private.example"
OCI = "application/vnd.oci.image"
ACCEPT = {"accept": f"{OCI}.manifest.v1+json, {OCI}.index.v1+json"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


GOOD = basic(USER, PASSWORD)
WRONG = basic(USER, "not-the-password")
NOBODY: dict[str, str] = {}


# ---- pure pieces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (GOOD["authorization"], (USER, PASSWORD)),
        ("basic " + base64.b64encode(b"u:p:with:colons").decode(), ("u", "p:with:colons")),
        ("Basic " + base64.b64encode("ü:ö".encode()).decode(), ("ü", "ö")),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b":password-only").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
        ("Basic " + "A" * 5000, None),
    ],
)
def test_parse_basic(value: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(value) == expected


KEY = (b"id", PRIVATE, "team/app", "blobs", "sha256:" + "a" * 64)
DENIED = Refusal(401, "UNAUTHORIZED", "no")


def test_access_cache_expires_allowed_and_refused_answers_separately() -> None:
    cache = AccessCache(ttl=60, negative_ttl=10)
    assert cache.get(KEY, now=0) == (False, None)
    cache.put(KEY, None, now=0)
    assert cache.get(KEY, now=59.9) == (True, None)
    assert cache.get(KEY, now=60) == (False, None)
    cache.put(KEY, DENIED, now=100)
    assert cache.get(KEY, now=109) == (True, DENIED)
    assert cache.get(KEY, now=110) == (False, None)
    assert len(cache) == 0


def test_access_cache_is_bounded() -> None:
    cache = AccessCache(max_entries=2)
    keys = [(bytes([i]), PRIVATE, "r", "blobs", "d") for i in range(3)]
    for key in keys:
        cache.put(key, None, now=0)
    assert len(cache) == 2
    assert cache.get(keys[0], now=1) == (False, None)  # the oldest went first
    assert cache.get(keys[2], now=1) == (True, None)


def test_refusals_make_fresh_errors() -> None:
    first, second = DENIED.error(), DENIED.error()
    assert first is not second
    assert (first.status, first.code) == (401, "UNAUTHORIZED")


def test_credentials_from_flags() -> None:
    found = parse_credentials(
        ["ghcr.io=bot:tok=en:1", "Index.Docker.IO=me:pw", "https://index.docker.io/v1/=x:y"]
    )
    assert found == {"ghcr.io": ("bot", "tok=en:1"), "docker.io": ("x", "y")}


@pytest.mark.parametrize("item", ["ghcr.io", "ghcr.io=bot", "=a:b", "ghcr.io=:pw", "ghcr.io=u:"])
def test_bad_credentials_never_echo_the_password(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_credentials([item])
    assert "pw" not in str(info.value)


def test_credentials_files(tmp_path: Path) -> None:
    docker = tmp_path / "config.json"
    auth = base64.b64encode(b"robot:s3cr,et").decode()
    docker.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth},
        "quay.io": {"username": "q", "password": "p"},
    }}))  # fmt: skip
    assert load_credentials_file(docker) == {
        "docker.io": ("robot", "s3cr,et"),
        "quay.io": ("q", "p"),
    }
    lines = tmp_path / "creds"
    lines.write_text("# one per line\n\nghcr.io=bot:a,b,c\n")
    assert load_credentials_file(lines) == {"ghcr.io": ("bot", "a,b,c")}
    for bad in ('{"auths": {"x": {"auth": "@@"}}}', '{"auths": []}', "{", "ghcr.io"):
        lines.write_text(bad)
        with pytest.raises(ConfigError):
            load_credentials_file(lines)
    with pytest.raises(ConfigError, match="cannot read"):
        load_credentials_file(tmp_path / "missing")


def test_config_hides_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("ghcr.io=file:from-file\nquay.io=q:p\n")
    argv = ["--upstream-credentials", "ghcr.io=flag:from-flag",
            "--upstream-credentials-file", str(creds)]  # fmt: skip
    config = peer_config(merged(_peer_parser().parse_args(argv), PEER_FLAGS, environ={}))
    assert config.upstream_credentials == {"ghcr.io": ("flag", "from-flag"), "quay.io": ("q", "p")}
    assert "from-flag" not in repr(config)
    env = {"SHOAL_UPSTREAM_CREDENTIALS": "ghcr.io=e:1,quay.io=f:2"}
    config = peer_config(merged(_peer_parser().parse_args([]), PEER_FLAGS, environ=env))
    assert config.upstream_credentials == {"ghcr.io": ("e", "1"), "quay.io": ("f", "2")}
    assert PeerConfig().upstream_credentials == {}


# ---- a node in front of a private registry -----------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    procs.require_binary("docker-registry", "docker-registry")
    with Registry(tmp_path_factory.mktemp("locked"), htpasswd=True) as reg:
        yield reg


@pytest.fixture
async def node(locked: Registry, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(
        tmp_path / "node", upstreams={PRIVATE: locked.url},
        upstream_credentials={PRIVATE: (USER, PASSWORD)},
    ) as n:  # fmt: skip
        yield n


def urls(image: PushedImage) -> list[str]:
    """Every path a pull of ``image`` asks for: tag, digest, then each blob."""
    paths = [
        f"/v2/{image.name}/manifests/{image.tag}",
        f"/v2/{image.name}/manifests/{image.digest}",
    ]
    paths += [f"/v2/{image.name}/blobs/{d}" for d in image.blobs]
    return [f"{p}?ns={PRIVATE}" for p in paths]


def body_of(image: PushedImage, path: str) -> bytes:
    tail = path.split("?")[0].rsplit("/", 1)[1]
    return image.blobs.get(tail, image.manifest_bytes)


async def fetch(client: httpx.AsyncClient, method: str, path: str,
                headers: dict[str, str]) -> httpx.Response:  # fmt: skip
    return await client.request(method, path, headers={**ACCEPT, **headers})


async def test_good_credentials_pull_the_rest_get_401_and_nothing_leaks(
    locked: Registry, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    image = locked.push_oci_image(locked.new_repo("team/app"), "v1", layer_sizes=[40_000])
    async with node.client() as client:
        for path in urls(image):  # a member of the team pulls: everything is now cached
            resp = await fetch(client, "GET", path, GOOD)
            assert resp.status_code == 200, (path, resp.text)
            assert resp.content == body_of(image, path)
        for headers in (NOBODY, WRONG, {"authorization": "Bearer x"}):
            for method in ("GET", "HEAD"):
                for path in urls(image):
                    resp = await fetch(client, method, path, headers)
                    assert resp.status_code == 401, (method, path, headers, resp.text)
                    assert resp.headers["www-authenticate"] == CHALLENGE
                    assert body_of(image, path) not in resp.content
                    if method == "GET":
                        assert resp.json()["errors"][0]["code"] == "UNAUTHORIZED"
        for path in urls(image):  # and the member still pulls (from the cache now)
            resp = await fetch(client, "GET", path, GOOD)
            assert resp.content == body_of(image, path)
        resp = await client.get("/v2/")  # the ping of podman, skopeo and dockerd
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == CHALLENGE
        assert (await client.get("/v2/", headers=GOOD)).status_code == 200
    for secret in (PASSWORD, "not-the-password", GOOD["authorization"], WRONG["authorization"]):
        assert secret not in caplog.text


async def test_access_to_one_repository_opens_no_other(locked: Registry, node: Node) -> None:
    """The node holds a blob of repository B; asked for it under A, the origin says 404."""
    a = locked.push_oci_image(locked.new_repo("team/a"), "v1", layer_sizes=[1000], seed=1)
    b = locked.push_oci_image(locked.new_repo("team/b"), "v1", layer_sizes=[1000], seed=2)
    b_layer = next(d for d in b.blobs if d not in a.blobs)
    async with node.client() as client:
        for path in urls(a) + urls(b):
            assert (await fetch(client, "GET", path, GOOD)).status_code == 200
        resp = await fetch(client, "GET", f"/v2/{a.name}/blobs/{b_layer}?ns={PRIVATE}", GOOD)
        assert resp.status_code == 404
        assert resp.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_anonymous_registries_are_unchanged(
    locked: Registry, registry: Registry, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Even for a client that pings /v2/ first and gets the challenge (skopeo)."""
    image = registry.push_oci_image(registry.new_repo("library/open"), "v1")
    async with running_node(
        tmp_path / "node", upstreams={"docker.io": registry.url, PRIVATE: locked.url},
        upstream_credentials={PRIVATE: (USER, PASSWORD)},
    ) as n, n.client() as client:  # fmt: skip
        path = f"/v2/{image.name}/manifests/v1?ns=docker.io"
        resp = await client.get(path, headers=ACCEPT)
        assert resp.status_code == 200
        assert resp.content == image.manifest_bytes
        ref = f"{n.host}/docker.io/{image.name}:v1"
        done = await trio.to_thread.run_sync(skopeo.copy, ref, tmp_path / "open")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "open" / "manifest.json").read_bytes() == image.manifest_bytes


async def test_origin_down_fails_closed(tmp_path: Path) -> None:
    """With the origin gone, a client the node has not checked yet gets 503, not the
    cached content; one checked in the last minute still pulls (the cached answer)."""
    with Registry(tmp_path / "registry", htpasswd=True) as origin:
        image = origin.push_oci_image(origin.new_repo("team/down"), "v1", layer_sizes=[1000])
        async with running_node(
            tmp_path / "node", upstreams={PRIVATE: origin.url},
            upstream_credentials={PRIVATE: (USER, PASSWORD)},
        ) as n, n.client() as client:  # fmt: skip
            for path in urls(image):
                assert (await fetch(client, "GET", path, GOOD)).status_code == 200
            origin.stop()
            for path in urls(image):
                resp = await fetch(client, "GET", path, WRONG)
                assert resp.status_code == 503, resp.text
                assert resp.json()["errors"][0]["code"] == "UNAVAILABLE"
                assert body_of(image, path) not in resp.content
                assert (await fetch(client, "GET", path, NOBODY)).status_code == 401
                assert (await fetch(client, "GET", path, GOOD)).content == body_of(image, path)


async def test_skopeo_answers_the_challenge(locked: Registry, node: Node, skopeo: Skopeo,
                                            tmp_path: Path) -> None:  # fmt: skip
    """A real client: skopeo gets our 401, retries with its --src-creds, and copies."""
    image = locked.push_oci_image(locked.new_repo("team/skopeo"), "v1", layer_sizes=[20_000])
    ref = f"{node.host}/{PRIVATE}/{image.name}:v1"  # path-prefix form names the registry

    def copy(ref: str, dest: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return skopeo.copy(ref, tmp_path / dest, *extra)

    ok = await trio.to_thread.run_sync(copy, ref, "ok", "--src-creds", f"{USER}:{PASSWORD}")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "manifest.json").read_bytes() == image.manifest_bytes
    for extra in ([], ["--src-creds", f"{USER}:wrong"]):
        denied = await trio.to_thread.run_sync(copy, ref, "denied", *extra)
        assert denied.returncode != 0
        assert "unauthorized" in denied.stderr.lower(), denied.stderr
