"""OCI names, references and routing: which upstream registry and repository a request means.

Theory of operation. A runtime asks the node for ``/v2/<name>/<kind>/<reference>``. The
``<name>`` may contain slashes, so the path is parsed from the right. The upstream registry
is chosen, in order, by:

1. ``?ns=<registry>`` — containerd appends it when it talks to a mirror (spec ``main``,
   "Registry Proxying"); treated as a lookup key, never as a host to dial blindly;
2. a path prefix — ``/v2/docker.io/prom/node-exporter/...`` (the DaoCloud ``m.daocloud.io``
   form, used by CRI-O/podman ``registries.conf`` mirrors): the first component names a
   registry when it contains ``.`` or ``:`` or is ``localhost``;
3. the configured default registry (docker, the conformance suite).

Docker Hub single-component names get ``library/`` (distribution/distribution#1203).
Grammars are copied from the distribution spec and image-spec ``descriptor.md`` and always
applied with ``fullmatch`` (``$`` would also match before a trailing newline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from peer.errors import RegistryError

# spec.md "Pulling manifests"; path components only (a port is not a valid component).
_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# spec.md: at most 128 characters.
TAG_RE: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# image-spec descriptor.md digest grammar.
DIGEST_RE: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# Algorithms we can verify; image-spec fixes the encoded form (lowercase hex only).
VERIFIABLE: Final = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
# Registry host names as they appear in ns= and path prefixes (distribution/reference domain
# grammar, with an optional port).
_HOST_RE: Final = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?"
)
# Many clients limit host + name to 255 characters (spec implementer note).
MAX_NAME_LENGTH: Final = 255

DOCKER_HUB: Final = "docker.io"
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

Kind = Literal["base", "manifests", "blobs", "tags", "referrers"]


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed ``/v2/...`` path: ``kind`` plus the raw name and reference, unvalidated."""

    kind: Kind
    name: str = ""
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes upstream: registry key (``docker.io``) and repository."""

    registry: str
    repository: str
    via_ns: bool = False

    @property
    def image(self) -> str:
        """``registry/repository``, the form ``allows.txt`` rules match."""
        return f"{self.registry}/{self.repository}"


def parse_path(path: str) -> Route | None:
    """Split a request path into a :class:`Route`; ``None`` if it is no registry path."""
    if path in ("/v2", "/v2/"):
        return Route("base")
    if not path.startswith("/v2/"):
        return None
    rest = path[4:]
    if rest.endswith("/tags/list"):
        return Route("tags", rest[: -len("/tags/list")])
    for kind in ("manifests", "blobs", "referrers"):
        marker = f"/{kind}/"
        idx = rest.rfind(marker)
        if idx > 0:
            reference = rest[idx + len(marker) :]
            if "/" in reference or not reference:
                continue
            return Route(kind, rest[:idx], reference)
    return None


def canonical_registry(registry: str) -> str:
    """Fold Docker Hub's aliases into ``docker.io`` and lowercase the host."""
    reg = registry.lower()
    return DOCKER_HUB if reg in _HUB_ALIASES else reg


def is_registry_host(component: str) -> bool:
    """Whether a first path component names a registry (contains ``.`` or ``:``, or localhost)."""
    return ("." in component or ":" in component or component == "localhost") and bool(
        _HOST_RE.fullmatch(component)
    )


def select_target(name: str, *, ns: str | None, default_registry: str) -> Target:
    """Choose the upstream registry and repository for ``name``.

    Raises:
        RegistryError: ``NAME_INVALID`` when the name or ``ns`` is outside the grammar.
    """
    if ns is not None:
        if not _HOST_RE.fullmatch(ns):
            raise RegistryError("NAME_INVALID", "invalid ns parameter", status=400, detail=ns[:200])
        registry, repository, via_ns = canonical_registry(ns), name, True
    else:
        first, _, remainder = name.partition("/")
        if remainder and is_registry_host(first):
            # a host with a port is not a valid path component, but the path-prefix form
            # still carries it (``/v2/127.0.0.1:5000/team/app/...``)
            registry, repository = canonical_registry(first), remainder
        else:
            registry, repository = canonical_registry(default_registry), name
        via_ns = False
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(repository):
        raise RegistryError(
            "NAME_INVALID", "invalid repository name", status=400, detail=name[:300]
        )
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return Target(registry, repository, via_ns)


def is_digest(reference: str) -> bool:
    """Whether a manifest reference is a digest (parsed as digest first, else tag)."""
    return ":" in reference


def check_digest(digest: str, *, code: str = "DIGEST_INVALID") -> str:
    """Validate a digest we must verify; returns it.

    Raises:
        RegistryError: 400 ``DIGEST_INVALID`` for a malformed digest or one we cannot verify.
    """
    if DIGEST_RE.fullmatch(digest):
        algorithm, _, encoded = digest.partition(":")
        pattern = VERIFIABLE.get(algorithm)
        if pattern is not None and pattern.fullmatch(encoded):
            return digest
        if pattern is None:
            raise RegistryError(
                "UNSUPPORTED",
                f"digest algorithm {algorithm!r} cannot be verified by this mirror",
                status=400,
            )
    raise RegistryError(code, "invalid digest", status=400, detail=digest[:200])


def check_tag(tag: str, *, code: str = "MANIFEST_UNKNOWN") -> str:
    """Validate a tag; a malformed tag is simply unknown (404, conformance M1/M5)."""
    if not TAG_RE.fullmatch(tag):
        raise RegistryError(code, "manifest unknown: invalid tag", status=404, detail=tag[:200])
    return tag
