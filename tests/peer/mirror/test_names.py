"""Routing and grammar tables for peer.mirror.names (pure)."""

from __future__ import annotations

import pytest

from peer.errors import RegistryError
from peer.mirror.names import Route, check_digest, check_tag, parse_path, select_target

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2/", Route("base")),
        ("/v2", Route("base")),
        ("/v2/library/alpine/manifests/3.20", Route("manifests", "library/alpine", "3.20")),
        ("/v2/a/b/c/blobs/" + SHA, Route("blobs", "a/b/c", SHA)),
        # a repository may itself be called "blobs" or "manifests": parse from the right
        ("/v2/x/blobs/manifests/latest", Route("manifests", "x/blobs", "latest")),
        ("/v2/x/manifests/blobs/" + SHA, Route("blobs", "x/manifests", SHA)),
        ("/v2/x/tags/list", Route("tags", "x")),
        ("/v2/x/referrers/" + SHA, Route("referrers", "x", SHA)),
        (
            "/v2/docker.io/prom/node-exporter/manifests/v1",
            Route("manifests", "docker.io/prom/node-exporter", "v1"),
        ),
        ("/v3/x/manifests/latest", None),
        ("/v2/x/manifests/", None),
        ("/v2/x/unknown/y", None),
        ("/", None),
    ],
)
def test_parse_path(path: str, route: Route | None) -> None:
    assert parse_path(path) == route


@pytest.mark.parametrize(
    ("name", "ns", "registry", "repo", "via_ns"),
    [
        ("alpine", None, "docker.io", "library/alpine", False),
        ("prom/node-exporter", None, "docker.io", "prom/node-exporter", False),
        ("library/alpine", "docker.io", "docker.io", "library/alpine", True),
        ("alpine", "registry-1.docker.io", "docker.io", "library/alpine", True),
        ("alpine", "index.docker.io", "docker.io", "library/alpine", True),
        ("pause", "registry.k8s.io", "registry.k8s.io", "pause", True),
        ("docker.io/prom/node-exporter", None, "docker.io", "prom/node-exporter", False),
        ("docker.io/alpine", None, "docker.io", "library/alpine", False),
        ("ghcr.io/a/b", None, "ghcr.io", "a/b", False),
        ("localhost/a", None, "localhost", "a", False),
        # a first component without a dot is a Docker Hub namespace
        ("prom/x", None, "docker.io", "prom/x", False),
        # ns wins over a path prefix
        ("docker.io/x", "quay.io", "quay.io", "docker.io/x", True),
    ],
)
def test_select_target(name: str, ns: str | None, registry: str, repo: str, via_ns: bool) -> None:
    target = select_target(name, ns=ns, default_registry="docker.io")
    assert (target.registry, target.repository, target.via_ns) == (registry, repo, via_ns)


def test_default_registry_applies_to_bare_names() -> None:
    target = select_target("team/app", ns=None, default_registry="127.0.0.1:5000")
    assert (target.registry, target.repository) == ("127.0.0.1:5000", "team/app")
    assert target.image == "127.0.0.1:5000/team/app"


@pytest.mark.parametrize(
    ("name", "ns"),
    [
        ("Alpine", None),  # uppercase
        ("../etc/passwd", None),
        ("a//b", None),
        ("a/", None),
        ("a" * 256, None),
        ("a\nb", None),
        ("alpine", "evil host"),
        ("alpine", "http://x"),
        ("alpine", "a/b"),
    ],
)
def test_bad_names_are_name_invalid(name: str, ns: str | None) -> None:
    with pytest.raises(RegistryError) as err:
        select_target(name, ns=ns, default_registry="docker.io")
    assert (err.value.code, err.value.status) == ("NAME_INVALID", 400)


@pytest.mark.parametrize("digest", [SHA, "sha512:" + "0" * 128])
def test_good_digests(digest: str) -> None:
    assert check_digest(digest) == digest


@pytest.mark.parametrize(
    ("digest", "code"),
    [
        ("sha256:" + "A" * 64, "DIGEST_INVALID"),  # uppercase hex is forbidden
        ("sha256:abc", "DIGEST_INVALID"),
        ("sha256:totallywrong", "DIGEST_INVALID"),
        ("sha256:" + "a" * 64 + "\n", "DIGEST_INVALID"),
        ("sha256:../../etc", "DIGEST_INVALID"),
        ("md5:" + "a" * 32, "UNSUPPORTED"),  # grammatical but not verifiable
    ],
)
def test_bad_digests(digest: str, code: str) -> None:
    with pytest.raises(RegistryError) as err:
        check_digest(digest)
    assert (err.value.code, err.value.status) == (code, 400)


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "sha256-" + "a" * 64, "A" * 128])
def test_good_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", [".INVALID_MANIFEST_NAME", "-x", "A" * 129, "a b", "a\n", ""])
def test_bad_tags_are_unknown_manifests(tag: str) -> None:
    with pytest.raises(RegistryError) as err:
        check_tag(tag)
    assert (err.value.code, err.value.status) == ("MANIFEST_UNKNOWN", 404)
