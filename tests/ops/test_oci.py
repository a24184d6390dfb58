"""Manifest parsing, platform choice, the walk and the differences verify reports (pure)."""

from __future__ import annotations

import hashlib
import json

import pytest

from peer.errors import IntegrityError
from peer.ops.errors import ManifestError
from peer.ops.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Fetched,
    Platform,
    describe_differences,
    parse_manifest,
    parse_platforms,
    plan_image,
    select,
)


def sha(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def manifest(config: str, *layers: str, media: str = OCI_MANIFEST) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer), "size": len(layer)} for layer in layers],
    }  # fmt: skip
    return json.dumps(doc).encode()


def index(children: dict[str, bytes], media: str = OCI_INDEX) -> bytes:
    entries = []
    for plat, body in children.items():
        os_, arch, *variant = plat.split("/")
        platform = {"os": os_, "architecture": arch} | ({"variant": variant[0]} if variant else {})
        entries.append({"mediaType": OCI_MANIFEST, "digest": sha(body), "size": len(body),
                        "platform": platform})  # fmt: skip
    return json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}).encode()


def fetched(body: bytes, media: str = "") -> Fetched:
    return Fetched(body, sha(body), media)


AMD = manifest("cfg-amd", "base", "app-amd")
ARM = manifest("cfg-arm", "base", "app-arm")
INDEX = index({"linux/amd64": AMD, "linux/arm64/v8": ARM})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", None),
        ("ALL", None),
        ("linux/amd64", (Platform("linux", "amd64"),)),
        ("linux/amd64, linux/arm64/v8",
         (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))),
    ],
)  # fmt: skip
def test_parse_platforms(text: str, expected: tuple[Platform, ...] | None) -> None:
    assert parse_platforms(text) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d", "/amd64"])
def test_parse_platforms_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad platform"):
        parse_platforms(text)


def test_parse_manifest_kinds() -> None:
    parsed = parse_manifest(AMD)
    assert (parsed.is_index, parsed.media_type) == (False, OCI_MANIFEST)
    assert [(b.role, b.digest) for b in parsed.blobs] == [
        ("config", sha("cfg-amd")), ("layer", sha("base")), ("layer", sha("app-amd")),
    ]  # fmt: skip
    assert parse_manifest(manifest("c", "l", media=DOCKER_MANIFEST)).media_type == DOCKER_MANIFEST
    parsed = parse_manifest(INDEX)
    assert parsed.is_index
    assert [str(c.platform) for c in parsed.children] == ["linux/amd64", "linux/arm64/v8"]
    assert parse_manifest(index({"linux/amd64": AMD}, DOCKER_LIST)).media_type == DOCKER_LIST
    # no mediaType in the body: the served Content-Type decides
    body = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(body, f"{DOCKER_LIST}; charset=utf-8").media_type == DOCKER_LIST


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", "", "not JSON"),
        (b"[]", "", "not a JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', "", "schema 1"),
        (b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
        (b'{"mediaType": "application/x-other"}', "", "unsupported manifest media type"),
        (json.dumps({"mediaType": OCI_INDEX}).encode(), "", "without a manifests list"),
        (json.dumps({"mediaType": OCI_MANIFEST, "layers": []}).encode(), "",
         "config: a descriptor must be an object"),
        (json.dumps({"mediaType": OCI_MANIFEST, "config": {"digest": "x", "size": 1},
                     "layers": [{"digest": "x"}]}).encode(), "",
         r"layers\[0\]: descriptor without a digest or size"),
    ],
)  # fmt: skip
def test_parse_manifest_rejects(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        parse_manifest(body, content_type)


def test_select_platforms() -> None:
    children = parse_manifest(INDEX).children
    assert select(children, None) == list(children)
    assert select(children, [Platform("linux", "arm64")]) == [children[1]]  # any variant
    assert select(children, [Platform("linux", "arm64", "v8")]) == [children[1]]
    with pytest.raises(
        ManifestError, match=r"no manifest for linux/s390x .*linux/amd64, linux/arm64/v8"
    ):
        select(children, [Platform("linux", "s390x")])


async def test_plan_walks_an_index_and_dedupes_blobs() -> None:
    store = {sha(b): b for b in (INDEX, AMD, ARM)}
    asked: list[str] = []

    async def fetch(ref: str) -> Fetched:
        asked.append(ref)
        return fetched(store[sha(INDEX)] if ref == "v1" else store[ref])

    plan = await plan_image(fetch, "v1", None)
    assert asked == ["v1", sha(AMD), sha(ARM)]
    assert [b.digest for b in plan.blobs] == [
        sha("cfg-amd"), sha("base"), sha("app-amd"), sha("cfg-arm"), sha("app-arm"),
    ]  # fmt: skip
    assert plan.total_bytes == sum(
        len(x) for x in ("cfg-amd", "base", "app-amd", "cfg-arm", "app-arm")
    )
    assert str(plan.blobs[0].platform) == "linux/amd64"
    one = await plan_image(fetch, "v1", [Platform("linux", "arm64")])
    assert [d.digest for d, _, _ in one.manifests] == [sha(ARM)]


async def test_plan_refuses_a_child_that_does_not_match_its_descriptor() -> None:
    async def fetch(ref: str) -> Fetched:
        return fetched(INDEX) if ref == "v1" else fetched(ARM)  # ARM served for every child

    with pytest.raises(IntegrityError, match=f"manifest {sha(AMD)}: got"):
        await plan_image(fetch, "v1", None)


async def test_plan_skips_foreign_layers() -> None:
    doc = json.loads(manifest("cfg", "base"))
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    doc["layers"].append({"mediaType": foreign, "digest": sha("win"), "size": 3,
                          "urls": ["https://example/win"]})  # fmt: skip
    body = json.dumps(doc).encode()

    async def fetch(ref: str) -> Fetched:
        return fetched(body)

    plan = await plan_image(fetch, "v1", None)
    assert [b.digest for b in plan.blobs] == [sha("cfg"), sha("base")]


@pytest.mark.parametrize(
    ("node", "upstream", "expected"),
    [
        (AMD, AMD, []),
        (manifest("c1", "a", "b"), manifest("c2", "a", "c"), [
            f"config: node {sha('c1')[:19]}, upstream {sha('c2')[:19]}",
            f"layers differ: node has 2, upstream 2; only on the node: {sha('b')[:19]}; "
            f"only upstream: {sha('c')[:19]}",
        ]),
        (index({"linux/amd64": AMD, "linux/arm64": ARM}),
         index({"linux/amd64": ARM, "linux/riscv64": AMD}), [
            f"platform linux/amd64: node {sha(AMD)[:19]}, upstream {sha(ARM)[:19]}",
            "platform linux/arm64: only on the node",
            f"platform linux/riscv64: only upstream ({sha(AMD)[:19]})",
        ]),
        (INDEX, AMD, ["the node serves an index, upstream has an image manifest"]),
        (manifest("c", "a"), manifest("c", "a", media=DOCKER_MANIFEST), [
            f"media type: node {OCI_MANIFEST}, upstream {DOCKER_MANIFEST}",
        ]),
        (AMD, AMD.replace(b'"layers"', b' "layers"'),
         ["manifest bytes differ (same content, different encoding)"]),
    ],
)  # fmt: skip
def test_describe_differences(node: bytes, upstream: bytes, expected: list[str]) -> None:
    assert describe_differences(fetched(node), fetched(upstream)) == expected


def test_descriptor_is_a_value() -> None:
    assert Descriptor("m", "sha256:x", 1) == Descriptor("m", "sha256:x", 1, None, "layer")
