"""Image references and list files (pure tables)."""

from __future__ import annotations

import pytest

from peer.ops.errors import BadReference, ImageListError
from peer.ops.images import ImageRef, images_from_allows, parse_image_list, parse_reference

SHA = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("alpine:3.20", ImageRef("docker.io", "library/alpine", "3.20")),
        ("library/alpine:3.20", ImageRef("docker.io", "library/alpine", "3.20")),
        ("prom/node-exporter", ImageRef("docker.io", "prom/node-exporter", "latest")),
        ("docker.io/alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("index.docker.io/library/alpine:edge", ImageRef("docker.io", "library/alpine", "edge")),
        ("registry-1.docker.io/grafana/grafana:11", ImageRef("docker.io", "grafana/grafana", "11")),
        ("ghcr.io/org/team/app:v1.2.3", ImageRef("ghcr.io", "org/team/app", "v1.2.3")),
        ("GHCR.IO/org/app:v1", ImageRef("ghcr.io", "org/app", "v1")),
        (
            "quay.io/prometheus/prometheus@" + SHA,
            ImageRef("quay.io", "prometheus/prometheus", None, SHA),
        ),
        ("alpine:3.20@" + SHA, ImageRef("docker.io", "library/alpine", "3.20", SHA)),
        ("alpine@" + SHA512, ImageRef("docker.io", "library/alpine", None, SHA512)),
        ("localhost:5000/team/app:dev", ImageRef("localhost:5000", "team/app", "dev")),
        ("localhost/app", ImageRef("localhost", "app", "latest")),
        ("127.0.0.1:5000/app", ImageRef("127.0.0.1:5000", "app", "latest")),
        ("registry.k8s.io/pause:3.9", ImageRef("registry.k8s.io", "pause", "3.9")),
        ("a/b__c/d-e.f_g:TAG_1", ImageRef("docker.io", "a/b__c/d-e.f_g", "TAG_1")),
    ],
)
def test_parse_reference(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Alpine", "must be lowercase"),
        ("ghcr.io/Org/App:v1", "must be lowercase"),
        ("alpine:", "bad tag"),
        ("alpine:-x", "bad tag"),
        ("alpine:" + "t" * 129, "bad tag"),
        ("alpine@sha256:abc", "64 lowercase hex"),
        ("alpine@sha256:" + "A" * 64, "64 lowercase hex"),
        ("alpine@md5:" + "a" * 32, "cannot be verified"),
        ("alpine@latest", "not a digest"),
        ("alpine 3.20", "one image per line"),
        ("https://ghcr.io/org/app", "no scheme"),
        ("ghcr.io/", "missing repository"),
        ("a//b", "bad repository"),
        ("-a/b", "bad repository"),
        ("my_registry.io:x/app", "bad registry host"),
        ("a:b:c", "bad repository"),
        ("x" * 300, "longer than 255"),
    ],
)
def test_parse_reference_rejects(text: str, reason: str) -> None:
    with pytest.raises(BadReference, match=reason):
        parse_reference(text)


def test_reference_forms() -> None:
    tagged = parse_reference("alpine:3.20")
    assert (str(tagged), tagged.name, tagged.reference) == (
        "docker.io/library/alpine:3.20", "docker.io/library/alpine", "3.20",
    )  # fmt: skip
    pinned = parse_reference(f"alpine:3.20@{SHA}")
    assert pinned.reference == SHA  # the digest wins, as docker and containerd do
    assert str(pinned) == f"docker.io/library/alpine:3.20@{SHA}"


def test_list_comments_blanks_duplicates_order() -> None:
    text = (
        "# base images\n"
        "\n"
        "   alpine:3.20   # pinned for the CI\n"
        "ghcr.io/org/app:v1\n"
        "\t\n"
        "docker.io/library/alpine:3.20\n"  # the same image, spelled out: dropped
        f"quay.io/x/y@{SHA}\n"
        "#ghcr.io/commented/out\n"
    )
    assert [str(i) for i in parse_image_list(text)] == [
        "docker.io/library/alpine:3.20",
        "ghcr.io/org/app:v1",
        f"quay.io/x/y@{SHA}",
    ]


def test_list_reports_every_bad_line_with_its_number() -> None:
    text = "alpine\nAlpine:1\n\n# fine\nbusybox:\nnginx one two\nredis\n"
    with pytest.raises(ImageListError) as info:
        parse_image_list(text, source="images.txt")
    assert [(e.lineno, e.text) for e in info.value.errors] == [
        (2, "Alpine:1"), (5, "busybox:"), (6, "nginx one two"),
    ]  # fmt: skip
    message = str(info.value)
    assert "images.txt:2: 'Alpine:1': repository 'Alpine' must be lowercase" in message
    assert "images.txt:5: 'busybox:': bad tag" in message
    assert "images.txt:6:" in message
    assert "one image per line" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n  # and more\n"])
def test_empty_lists(text: str) -> None:
    assert parse_image_list(text) == []


def test_images_from_allows() -> None:
    images, skipped = images_from_allows(
        "docker.io/library/*\nquay.io/prometheus/prometheus  # exact\nghcr.io/**\n"
        "docker.io/grafana/grafana\n\n# comment\n"
    )
    assert [str(i) for i in images] == [
        "quay.io/prometheus/prometheus:latest",
        "docker.io/grafana/grafana:latest",
    ]
    assert skipped == ["docker.io/library/*", "ghcr.io/**"]
