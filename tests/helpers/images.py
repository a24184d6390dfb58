"""Build real, unpackable container images in memory, deterministically.

A layer is a gzip'd tar holding one file of incompressible bytes, so a test that asks for a
64 MiB layer moves about 64 MiB over the wire. The image config carries the correct
``rootfs.diff_ids`` (sha256 of each *uncompressed* tar), so containerd and podman can unpack
and verify it. Every byte is a pure function of the arguments: same call, same digests.

Media types are from the OCI image spec (``image-manifest.md``, ``image-index.md``) and the
Docker "Image Manifest V2, Schema 2" document.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import tarfile
from dataclasses import dataclass, field
from typing import Any, Final

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# (os, architecture) or (os, architecture, variant), e.g. ("linux", "arm64", "v8").
Platform = tuple[str, str] | tuple[str, str, str]

# A fixed timestamp for tar entries and the config, so builds are reproducible.
EPOCH: Final = 1_700_000_000
CREATED: Final = "2023-11-14T22:13:20Z"
# Level 0 (stored deflate blocks) is valid gzip that every runtime unpacks. The payload is
# random and would not shrink anyway, and level 0 is ~15x faster than level 1 on big layers.
GZIP_LEVEL: Final = 0


@dataclass(frozen=True)
class Layer:
    """One gzip'd tar layer: ``blob`` is what the registry stores, ``diff_id`` names the tar."""

    blob: bytes
    digest: str
    diff_id: str


@dataclass(frozen=True)
class PushedImage:
    """An image (manifest) or index as pushed, with everything a test needs to check a pull.

    Attributes:
        name: repository name, e.g. ``library/alpine``.
        tag: the reference it was pushed under; index children use their digest.
        digest: ``sha256:…`` of ``manifest_bytes``.
        manifest_bytes: the exact manifest or index body.
        media_type: its Content-Type.
        blobs: config and layer blobs by digest (empty for an index).
        children: the per-platform images of an index (empty for an image).
        platform: the platform of an image manifest, None for an index.
    """

    name: str
    tag: str
    digest: str
    manifest_bytes: bytes
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    children: list[PushedImage] = field(default_factory=list)
    platform: Platform | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.manifest_bytes)
        return parsed

    @property
    def config_digest(self) -> str:
        digest: str = self.manifest["config"]["digest"]
        return digest

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest["layers"]]

    def ref(self, host: str, *, by_digest: bool = False) -> str:
        """``host/name:tag``, or ``host/name@digest`` with ``by_digest``."""
        return (
            f"{host}/{self.name}@{self.digest}" if by_digest else f"{host}/{self.name}:{self.tag}"
        )

    def all_blobs(self) -> dict[str, bytes]:
        """Blobs of this image and of all its children."""
        out = dict(self.blobs)
        for child in self.children:
            out.update(child.all_blobs())
        return out


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def seed_bytes(key: str) -> int:
    """A stable integer seed from a string (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=64)
def make_layer(size: int, key: str) -> Layer:
    """A gzip'd tar holding ``shoal/<key>.bin`` with ``size`` pseudo-random bytes.

    The blob is about ``size`` + 1.5 KiB (tar headers and end blocks, gzip framing) because
    the content does not compress. Cached, so a test that rebuilds an image is cheap.
    """
    payload = random.Random(seed_bytes(key)).randbytes(size)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    header = _tarinfo(f"shoal/{safe}.bin", tarfile.REGTYPE, 0o644, size)
    tar_bytes = b"".join(
        [
            _tarinfo("shoal/", tarfile.DIRTYPE, 0o755).tobuf(tarfile.USTAR_FORMAT),
            header.tobuf(tarfile.USTAR_FORMAT),
            payload,
            bytes(-size % tarfile.BLOCKSIZE),  # pad the member to a whole block
            bytes(2 * tarfile.BLOCKSIZE),  # end-of-archive marker
        ]
    )
    blob = gzip.compress(tar_bytes, compresslevel=GZIP_LEVEL, mtime=0)
    return Layer(blob=blob, digest=digest_of(blob), diff_id=digest_of(tar_bytes))


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _platform_fields(platform: Platform) -> dict[str, str]:
    fields = {"os": platform[0], "architecture": platform[1]}
    if len(platform) == 3:
        fields["variant"] = platform[2]
    return fields


def build_image(
    name: str, tag: str, layer_sizes: list[int], platform: Platform, *, seed: int, oci: bool
) -> PushedImage:
    """An image manifest with a config and one layer per size, OCI or Docker schema 2."""
    plat = "-".join(platform)
    layers = [
        make_layer(size, f"{name}:{tag}:{plat}:{seed}:{i}") for i, size in enumerate(layer_sizes)
    ]
    config = canonical_json(
        {
            "created": CREATED,
            **_platform_fields(platform),
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"org.shoal.test": f"{name}:{tag}:{seed}"},
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [
                {"created": CREATED, "created_by": f"shoal test layer {i}"}
                for i in range(len(layers))
            ],
        }
    )
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP,
                    "digest": layer.digest,
                    "size": len(layer.blob),
                }
                for layer in layers
            ],
        }
    )
    blobs = {digest_of(config): config} | {layer.digest: layer.blob for layer in layers}
    return PushedImage(
        name=name,
        tag=tag,
        digest=digest_of(manifest),
        manifest_bytes=manifest,
        media_type=media_type,
        blobs=blobs,
        platform=platform,
    )


def build_index(
    name: str,
    tag: str,
    platforms: list[Platform],
    layer_sizes: list[int],
    *,
    seed: int,
    oci: bool,
) -> PushedImage:
    """An OCI index (or Docker manifest list) over one image per platform.

    Each child gets its own layers, and is tagged by its digest so it can be pushed first.
    """
    children = []
    for platform in platforms:
        child = build_image(name, tag, layer_sizes, platform, seed=seed, oci=oci)
        children.append(
            PushedImage(
                name=child.name,
                tag=child.digest,
                digest=child.digest,
                manifest_bytes=child.manifest_bytes,
                media_type=child.media_type,
                blobs=child.blobs,
                platform=platform,
            )
        )
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": child.media_type,
                    "digest": child.digest,
                    "size": len(child.manifest_bytes),
                    "platform": _platform_fields(platform),
                }
                for child, platform in zip(children, platforms, strict=True)
            ],
        }
    )
    return PushedImage(
        name=name,
        tag=tag,
        digest=digest_of(index),
        manifest_bytes=index,
        media_type=media_type,
        children=children,
    )
