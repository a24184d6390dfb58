"""Manifests, indexes, platforms and the walk from a tag to its blobs (no I/O of its own).

Theory of operation. An image reference resolves to one manifest (OCI image manifest or
Docker schema 2) or to an index (OCI image index or Docker manifest list) whose
descriptors point at per-platform manifests. :func:`plan_image` walks that tree through
an injected ``fetch(reference)`` coroutine — the node's client or the origin's — checks
every child against the digest and size its descriptor promised, and returns the
deduplicated blobs (configs and layers) that a runtime would download. Comparing two
trees for ``shoal verify`` is pure (:func:`describe_differences`).

References: OCI image-spec ``manifest.md``, ``image-index.md``, ``descriptor.md``; Docker
"Image Manifest V2, Schema 2". Schema 1 manifests are refused: they are deprecated and
registries have stopped serving them.
"""

from __future__ import annotations

import hashlib
import json
import platform as _host
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peer.errors import IntegrityError
from peer.ops.errors import ManifestError

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: What the tools ask for: the four modern types, never schema 1.
ACCEPT: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1"
#: Windows base layers that registries may not serve (image-spec "non-distributable").
_FOREIGN: Final = ("foreign", "nondistributable")
#: Go's GOARCH names for ``platform.machine()`` values (image-spec config.md).
_ARCH: Final = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """``os/architecture[/variant]`` as in an index descriptor's ``platform``."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8`` → Platform; raises ValueError on anything else."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"bad platform {text!r}: want os/arch[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Platform) -> bool:
        """Whether ``other`` (from an index) satisfies this wanted platform."""
        return (self.os, self.architecture) == (other.os, other.architecture) and (
            self.variant is None or self.variant == other.variant
        )


def host_platform() -> Platform:
    """The platform of this machine (``linux/amd64`` on x86-64 Linux)."""
    machine = _host.machine().lower()
    return Platform(_host.system().lower() or "linux", _ARCH.get(machine, machine))


def parse_platforms(text: str) -> tuple[Platform, ...] | None:
    """``linux/amd64,linux/arm64`` → platforms; ``all`` → None (every platform)."""
    if text.strip().lower() == "all":
        return None
    return tuple(Platform.parse(item) for item in text.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what to fetch, how big it is, and what it is for."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    role: str = "layer"  # "config", "layer" or "manifest"


@dataclass(frozen=True, slots=True)
class Fetched:
    """A manifest as fetched: exact bytes, their digest, the served Content-Type."""

    body: bytes
    digest: str
    media_type: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed manifest or index."""

    media_type: str
    is_index: bool
    children: tuple[Descriptor, ...] = ()  # an index's manifests
    blobs: tuple[Descriptor, ...] = ()  # a manifest's config and layers


def _descriptor(raw: Any, where: str, role: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a descriptor must be an object")
    digest, size, media = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: descriptor without a digest or size")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict) and isinstance(plat.get("os"), str):
        variant = plat.get("variant")
        platform = Platform(
            plat["os"], str(plat.get("architecture", "")), variant if variant else None
        )
    return Descriptor(str(media), digest, size, platform, role)


def parse_manifest(body: bytes, content_type: str = "") -> Parsed:
    """Parse manifest or index bytes.

    Args:
        body: The exact bytes.
        content_type: The served ``Content-Type``; the body's ``mediaType`` wins when set.

    Raises:
        ManifestError: Not JSON, schema 1, or an unknown media type.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    media = doc.get("mediaType") or content_type.split(";", 1)[0].strip()
    if doc.get("schemaVersion") == 1 or media.startswith(_SCHEMA1):
        raise ManifestError("schema 1 manifest: not supported (re-push the image)")
    if not media and isinstance(doc.get("manifests"), list):
        media = OCI_INDEX
    elif not media and isinstance(doc.get("layers"), list):
        media = OCI_MANIFEST
    if media in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise ManifestError("index without a manifests list")
        children = tuple(_descriptor(d, f"manifests[{i}]", "manifest") for i, d in enumerate(items))
        return Parsed(media, True, children=children)
    if media in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest without a layers list")
        blobs = [_descriptor(doc.get("config"), "config", "config")]
        blobs += [_descriptor(d, f"layers[{i}]", "layer") for i, d in enumerate(layers)]
        return Parsed(media, False, blobs=tuple(blobs))
    raise ManifestError(f"unsupported manifest media type {media!r}")


def distributable(blob: Descriptor) -> bool:
    """False for foreign / non-distributable layers that a mirror is not expected to hold."""
    return not any(word in blob.media_type for word in _FOREIGN)


def select(children: Sequence[Descriptor], wanted: Sequence[Platform] | None) -> list[Descriptor]:
    """The index entries to use: all of them for ``wanted=None``, else the matching ones.

    Raises:
        ManifestError: ``wanted`` matches nothing; the message lists what the index has.
    """
    if wanted is None:
        return list(children)
    chosen = [c for c in children if c.platform and any(w.matches(c.platform) for w in wanted)]
    if not chosen:
        have = ", ".join(sorted({str(c.platform) for c in children if c.platform})) or "none"
        want = ", ".join(map(str, wanted))
        raise ManifestError(f"no manifest for {want} in the index (it has: {have})")
    return chosen


def check_fetched(fetched: Fetched, descriptor: Descriptor) -> None:
    """Raise IntegrityError unless ``fetched`` is what ``descriptor`` promised."""
    digest = digest_of(fetched.body, descriptor.digest)
    if digest != descriptor.digest or len(fetched.body) != descriptor.size:
        raise IntegrityError(
            f"manifest {descriptor.digest}: got {len(fetched.body)} bytes hashing to {digest}, "
            f"the index says {descriptor.size} bytes"
        )


def digest_of(data: bytes, like: str = "sha256:") -> str:
    """``algorithm:hex`` of ``data``, using the algorithm of ``like``."""
    algorithm = like.partition(":")[0] or "sha256"
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


Fetch = Callable[[str], Awaitable[Fetched]]


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """Everything one image needs: its manifests and its distinct blobs."""

    root: Fetched
    parsed: Parsed
    manifests: tuple[tuple[Descriptor, Fetched, Parsed], ...]  # chosen children of an index
    blobs: tuple[Descriptor, ...]

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs)


async def plan_image(
    fetch: Fetch, reference: str, platforms: Sequence[Platform] | None
) -> ImagePlan:
    """Resolve ``reference`` and walk to the blobs of the chosen platforms.

    Args:
        fetch: Fetches a manifest by tag or digest (from the node or the origin).
        reference: Tag or digest of the root.
        platforms: Platforms to keep from an index; None keeps every entry.

    Raises:
        ManifestError: The tree cannot be walked, or no entry matches ``platforms``.
        IntegrityError: A child does not match its descriptor.
    """
    root = await fetch(reference)
    parsed = parse_manifest(root.body, root.media_type)
    manifests: list[tuple[Descriptor, Fetched, Parsed]] = []
    blobs: dict[str, Descriptor] = {}
    if parsed.is_index:
        for child in select(parsed.children, platforms):
            fetched = await fetch(child.digest)
            check_fetched(fetched, child)
            child_parsed = parse_manifest(fetched.body, fetched.media_type)
            if child_parsed.is_index:
                raise ManifestError(f"{child.digest}: nested indexes are not supported")
            manifests.append((child, fetched, child_parsed))
            for blob in child_parsed.blobs:
                if distributable(blob):
                    blobs.setdefault(blob.digest, _with_platform(blob, child.platform))
    else:
        blobs = {b.digest: b for b in parsed.blobs if distributable(b)}
    return ImagePlan(root, parsed, tuple(manifests), tuple(blobs.values()))


def _with_platform(blob: Descriptor, platform: Platform | None) -> Descriptor:
    return Descriptor(blob.media_type, blob.digest, blob.size, platform, blob.role)


def _short(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def describe_differences(node: Fetched, upstream: Fetched) -> list[str]:
    """What differs between two roots, in words an operator can act on (empty if equal)."""
    if node.digest == upstream.digest and node.body == upstream.body:
        return []
    try:
        a, b = parse_manifest(node.body, node.media_type), parse_manifest(upstream.body, "")
    except ManifestError as exc:
        return [f"cannot compare the manifests: {exc}"]
    if a.is_index != b.is_index:
        kind = {True: "an index", False: "an image manifest"}
        return [f"the node serves {kind[a.is_index]}, upstream has {kind[b.is_index]}"]
    out: list[str] = []
    if a.media_type != b.media_type:
        out.append(f"media type: node {a.media_type}, upstream {b.media_type}")
    if a.is_index:
        mine = {str(c.platform): c.digest for c in a.children}
        theirs = {str(c.platform): c.digest for c in b.children}
        for plat in sorted(mine.keys() | theirs.keys()):
            if plat not in theirs:
                out.append(f"platform {plat}: only on the node")
            elif plat not in mine:
                out.append(f"platform {plat}: only upstream ({_short(theirs[plat])})")
            elif mine[plat] != theirs[plat]:
                out.append(
                    f"platform {plat}: node {_short(mine[plat])}, upstream {_short(theirs[plat])}"
                )
        return out
    config_a, config_b = a.blobs[0].digest, b.blobs[0].digest
    if config_a != config_b:
        out.append(f"config: node {_short(config_a)}, upstream {_short(config_b)}")
    layers_a = [d.digest for d in a.blobs[1:]]
    layers_b = [d.digest for d in b.blobs[1:]]
    if layers_a != layers_b:
        only_node = [_short(d) for d in layers_a if d not in layers_b]
        only_up = [_short(d) for d in layers_b if d not in layers_a]
        detail = f"node has {len(layers_a)}, upstream {len(layers_b)}"
        if only_node:
            detail += f"; only on the node: {', '.join(only_node)}"
        if only_up:
            detail += f"; only upstream: {', '.join(only_up)}"
        out.append(f"layers differ: {detail}")
    return out or ["manifest bytes differ (same content, different encoding)"]
