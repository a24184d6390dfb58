"""``shoal config``: the files that point a container runtime at a node (pure renderers).

* **containerd** (``/etc/containerd/certs.d``, or ``ctr --hosts-dir``): one
  ``<registry>/hosts.toml`` per registry. The node is a ``[host]`` with ``pull`` and
  ``resolve`` and a short ``dial_timeout``, so a stopped node costs a pull 200 ms before
  containerd falls back to ``server``, the real registry (containerd docs,
  ``docs/hosts.md``). containerd adds ``?ns=<registry>`` to mirror requests, which is how
  one node serves every registry.
* **podman / CRI-O / skopeo** (``containers-registries.conf(5)``): a ``[[registry]]`` per
  registry whose ``[[registry.mirror]]`` is the node in path-prefix form
  (``127.0.0.1:5050/docker.io``), ``insecure = true`` for a plain-HTTP node. Written as a
  drop-in for ``/etc/containers/registries.conf.d/`` so the distribution's own settings
  (search registries, aliases) stay in force; it is also a complete file for
  ``skopeo --registries-conf``.
* **docker** (``/etc/docker/daemon.json``): ``registry-mirrors`` — which dockerd only uses
  for Docker Hub. Other registries need containerd or podman configuration (or docker's
  containerd image store with the containerd hosts directory).

``fallbacks`` replaces the real registry as the fallback (an internal registry, or a dead
address in tests that must prove only the node served a pull).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from peer.mirror.names import canonical_registry, is_registry_host
from peer.ops.images import DOCKER_HUB

DEFAULT_MIRROR: Final = "http://127.0.0.1:5050"
#: The registries of the shipped allows.txt.
DEFAULT_REGISTRIES: Final = ("docker.io", "quay.io", "ghcr.io", "registry.k8s.io")
#: How long containerd waits to connect to the node before trying the next host.
DIAL_TIMEOUT: Final = "200ms"
PODMAN_FILE: Final = "50-shoal.conf"
DOCKER_FILE: Final = "daemon.json"
DOCKER_NOTE: Final = (
    "note: docker uses registry-mirrors for Docker Hub (docker.io) only; images from other "
    "registries are pulled directly. Configure containerd or podman for those."
)
HEADER: Final = "# Written by `shoal config {runtime}`: pulls go through the shoal node {mirror}.\n"


@dataclass(frozen=True, slots=True)
class Mirror:
    """The node's URL, split into what each runtime wants."""

    url: str  # http://127.0.0.1:5050
    host: str  # 127.0.0.1:5050
    secure: bool

    @classmethod
    def parse(cls, text: str) -> Mirror:
        """``http://HOST:PORT`` (``HOST:PORT`` means http); raises ValueError."""
        url = text.strip()
        if "://" not in url:
            url = f"http://{url}"
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  (validates the port)
            valid = bool(parts.hostname) and parts.path in ("", "/") and not parts.query
        except ValueError:
            valid = False
        if parts.scheme not in ("http", "https") or not valid:
            raise ValueError(f"--mirror wants http(s)://HOST[:PORT], got {text!r}")
        return cls(f"{parts.scheme}://{parts.netloc}", parts.netloc, parts.scheme == "https")


def parse_registries(text: str) -> tuple[str, ...]:
    """``docker.io,ghcr.io`` → canonical, deduplicated names; raises ValueError."""
    out: dict[str, None] = {}
    for item in text.split(","):
        name = item.strip()
        if not name:
            continue
        if name != DOCKER_HUB and not is_registry_host(name):
            raise ValueError(f"{name!r} is not a registry host (e.g. docker.io, ghcr.io)")
        out.setdefault(canonical_registry(name), None)
    if not out:
        raise ValueError("--registries names no registry")
    return tuple(out)


def upstream_server(registry: str) -> str:
    """The real registry's API endpoint: Docker Hub's is registry-1.docker.io."""
    return "https://registry-1.docker.io" if registry == DOCKER_HUB else f"https://{registry}"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def containerd_hosts(
    mirror: Mirror, registries: Sequence[str], *, fallbacks: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{"docker.io/hosts.toml": text, ...}`` for a ``certs.d`` directory."""
    files = {}
    for registry in registries:
        server = (fallbacks or {}).get(registry) or upstream_server(registry)
        files[f"{registry}/hosts.toml"] = (
            HEADER.format(runtime="containerd", mirror=mirror.url)
            + f"server = {_toml_str(server)}\n\n"
            + f"[host.{_toml_str(mirror.url)}]\n"
            + '  capabilities = ["pull", "resolve"]\n'
            + f"  dial_timeout = {_toml_str(DIAL_TIMEOUT)}\n"
        )
    return files


def registries_conf(
    mirror: Mirror, registries: Sequence[str], *, fallbacks: Mapping[str, str] | None = None
) -> str:
    """A ``registries.conf`` (drop-in) sending each registry's pulls to the node first."""
    blocks = [HEADER.format(runtime="podman", mirror=mirror.url).rstrip("\n")]
    for registry in registries:
        location = (fallbacks or {}).get(registry, registry)
        location = location.split("://", 1)[-1].rstrip("/")
        block = (
            "[[registry]]\n"
            f"prefix = {_toml_str(registry)}\n"
            f"location = {_toml_str(location)}\n\n"
            "[[registry.mirror]]\n"
            f"location = {_toml_str(f'{mirror.host}/{registry}')}"
        )
        if not mirror.secure:
            block += "\ninsecure = true"
        blocks.append(block)
    return "\n\n".join(blocks) + "\n"


def _loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    return name in ("localhost", "::1") or name.startswith("127.")


def docker_daemon_json(mirror: Mirror, existing: Mapping[str, Any] | None = None) -> str:
    """``daemon.json`` with the node as Docker Hub mirror, keeping every other setting.

    A plain-HTTP node off loopback also goes into ``insecure-registries`` (dockerd treats
    127.0.0.0/8 as insecure already).
    """
    doc: dict[str, Any] = dict(existing or {})
    mirrors = [m for m in doc.get("registry-mirrors", []) if m.rstrip("/") != mirror.url]
    doc["registry-mirrors"] = [mirror.url, *mirrors]
    if not mirror.secure and not _loopback(mirror.host):
        insecure = list(doc.get("insecure-registries", []))
        if mirror.host not in insecure:
            insecure.append(mirror.host)
        doc["insecure-registries"] = insecure
    return json.dumps(doc, indent=2) + "\n"


def render(
    runtime: str,
    mirror: Mirror,
    registries: Sequence[str],
    *,
    fallbacks: Mapping[str, str] | None = None,
    existing_daemon_json: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Every file for ``runtime`` (``containerd``, ``podman``, ``docker``) by relative path."""
    if runtime == "containerd":
        return containerd_hosts(mirror, registries, fallbacks=fallbacks)
    if runtime == "podman":
        return {PODMAN_FILE: registries_conf(mirror, registries, fallbacks=fallbacks)}
    if runtime == "docker":
        return {DOCKER_FILE: docker_daemon_json(mirror, existing_daemon_json)}
    raise ValueError(f"unknown runtime {runtime!r}: containerd, podman or docker")
