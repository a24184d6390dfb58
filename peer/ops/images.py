"""Image references and image list files (pure: text in, values or errors out).

An image list has one reference per line, the format DaoCloud's public-image-mirror keeps
its sync lists in::

    # base images
    alpine:3.20                    -> docker.io/library/alpine:3.20
    prom/node-exporter             -> docker.io/prom/node-exporter:latest
    ghcr.io/org/app:v1  # pinned   -> ghcr.io/org/app:v1
    quay.io/x/y@sha256:<64 hex>    -> by digest
    localhost:5000/team/app:dev    -> a registry with a port

Grammar (distribution/reference, as docker and containerd parse it): an optional
``@digest`` is split off first; the tag is what follows the last ``:`` after the last
``/``; the first path component names a registry when it contains ``.`` or ``:`` or is
``localhost``, otherwise the image is on Docker Hub, whose one-component names live under
``library/``. No tag and no digest means ``:latest``. ``#`` starts a comment anywhere (it
cannot occur in a reference). Digests must be ``sha256`` or ``sha512``: the tools verify
every byte, and cannot verify other algorithms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from peer.mirror.names import (
    DIGEST_RE,
    MAX_NAME_LENGTH,
    NAME_RE,
    TAG_RE,
    VERIFIABLE,
    canonical_registry,
    is_registry_host,
)
from peer.ops.errors import BadReference, ImageListError, LineError

DOCKER_HUB: Final = "docker.io"
DEFAULT_TAG: Final = "latest"


@dataclass(frozen=True, slots=True, order=True)
class ImageRef:
    """A normalised image reference.

    Attributes:
        registry: Canonical registry host (``docker.io``, ``ghcr.io``, ``127.0.0.1:5000``).
        repository: Repository path (``library/alpine``).
        tag: The tag, or None when only a digest was given.
        digest: The digest, or None when only a tag was given.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, the form allows.txt rules match."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask a registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def _check_digest(digest: str) -> str:
    if not DIGEST_RE.fullmatch(digest):
        raise BadReference(f"{digest!r} is not a digest (expected sha256:<64 hex digits>)")
    algorithm, _, encoded = digest.partition(":")
    pattern = VERIFIABLE.get(algorithm)
    if pattern is None:
        raise BadReference(f"digest algorithm {algorithm!r} cannot be verified (sha256, sha512)")
    if not pattern.fullmatch(encoded):
        size = 64 if algorithm == "sha256" else 128
        raise BadReference(f"bad digest {digest!r}: {algorithm} wants {size} lowercase hex digits")
    return digest


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> ImageRef:
    """Parse one image reference.

    Args:
        text: ``[registry/]repository[:tag][@digest]``.
        default_registry: The registry of names without one.

    Returns:
        The normalised reference (``alpine`` → ``docker.io/library/alpine:latest``).

    Raises:
        BadReference: The text is not a reference; the message says which part is wrong.
    """
    if not text:
        raise BadReference("empty reference")
    if any(c.isspace() for c in text):
        raise BadReference("one image per line: a reference has no spaces")
    if "://" in text:
        raise BadReference("a reference has no scheme: write ghcr.io/org/app, not https://...")
    remainder, at, digest = text.partition("@")
    if at:
        _check_digest(digest)
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag: str | None = None
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            raise BadReference(
                f"bad tag {tag!r}: letters, digits, '_', '.' and '-', at most 128, "
                "not starting with '.' or '-'"
            )
    first, sep, rest = remainder.partition("/")
    if sep and is_registry_host(first):
        registry, repository = canonical_registry(first), rest
    elif sep and ("." in first or ":" in first):
        raise BadReference(f"bad registry host {first!r}")
    else:
        registry, repository = canonical_registry(default_registry), remainder
    if not repository:
        raise BadReference("missing repository name")
    if repository != repository.lower() and NAME_RE.fullmatch(repository.lower()):
        raise BadReference(f"repository {repository!r} must be lowercase")
    if not NAME_RE.fullmatch(repository):
        raise BadReference(
            f"bad repository {repository!r}: lowercase letters and digits, separated by "
            "'.', '_', '__', '-' or '/'"
        )
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
        raise BadReference(f"name longer than {MAX_NAME_LENGTH} characters")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return ImageRef(registry, repository, tag, digest if at else None)


def parse_image_list(text: str, *, source: str = "<list>") -> list[ImageRef]:
    """Parse an image list file; duplicates are dropped, order is kept.

    Args:
        text: The file's content.
        source: The file's name, for messages.

    Returns:
        The images, in the order of their first appearance.

    Raises:
        ImageListError: Some lines are malformed; it lists every one with its number.
    """
    images: dict[ImageRef, None] = {}
    errors: list[LineError] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            images.setdefault(parse_reference(line), None)
        except BadReference as exc:
            errors.append(LineError(lineno, line, str(exc)))
    if errors:
        raise ImageListError(source, errors)
    return list(images)


def images_from_allows(text: str) -> tuple[list[ImageRef], list[str]]:
    """The exact repositories of an ``allows.txt``, each at ``:latest``; and skipped rules.

    Wildcard rules (``prefix/*``, ``prefix/**``) name no repository, so they are returned
    separately for the caller to mention.
    """
    images: dict[ImageRef, None] = {}
    skipped: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if line.endswith(("/*", "/**")):
            skipped.append(line)
            continue
        try:
            images.setdefault(parse_reference(line), None)
        except BadReference:
            skipped.append(line)
    return list(images), skipped


def format_refs(images: Iterable[ImageRef]) -> str:
    """One reference per line (the image list format)."""
    return "".join(f"{image}\n" for image in images)
