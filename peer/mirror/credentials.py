"""The node's own credentials for private upstream registries, from flags or a file.

``--upstream-credentials REGISTRY=USER:PASSWORD`` (repeatable; ``SHOAL_UPSTREAM_CREDENTIALS``
takes a comma-separated list) and ``--upstream-credentials-file PATH``, which holds either

* a Docker ``config.json`` / Kubernetes ``.dockerconfigjson``
  (``{"auths": {"ghcr.io": {"auth": "<base64 user:password>"}}}``, or ``username`` and
  ``password`` instead of ``auth``), or
* lines ``REGISTRY=USER:PASSWORD`` (blank lines and ``#`` comments ignored) — the form for
  passwords with commas in them.

Registry names are canonical (``index.docker.io``, ``https://index.docker.io/v1/`` →
``docker.io``). A registry with credentials is *private* to the node: see
:mod:`peer.mirror.access`. Nothing here logs a password, and errors name the registry or
the line, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from peer.errors import ConfigError
from peer.mirror.names import canonical_registry

__all__ = ["load_credentials_file", "parse_credentials"]

Credentials = dict[str, tuple[str, str]]


def _registry(name: str) -> str:
    name = name.strip()
    if "://" in name:  # Docker's config.json keys Docker Hub as https://index.docker.io/v1/
        name = urlsplit(name).netloc
    name = name.split("/", 1)[0]
    if not name:
        raise ConfigError("upstream credentials: empty registry name")
    return canonical_registry(name)


def _pair(registry: str, user: str, password: str, where: str) -> tuple[str, tuple[str, str]]:
    if not user or not password:
        raise ConfigError(f"upstream credentials for {registry!r} ({where}): need USER:PASSWORD")
    return _registry(registry), (user, password)


def parse_credentials(
    items: Iterable[str], *, where: str = "--upstream-credentials"
) -> Credentials:
    """``REGISTRY=USER:PASSWORD`` items → {registry: (user, password)}."""
    out: Credentials = {}
    for n, item in enumerate(items, 1):
        registry, sep, rest = str(item).partition("=")
        user, sep2, password = rest.partition(":")
        if not (sep and sep2 and registry.strip()):
            raise ConfigError(f"{where} entry {n}: want REGISTRY=USER:PASSWORD")
        key, value = _pair(registry, user.strip(), password, f"{where} entry {n}")
        out[key] = value
    return out


def _docker_config(doc: Mapping[str, Any], path: Path) -> Credentials:
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        raise ConfigError(f'{path}: no "auths" table')
    out: Credentials = {}
    for registry, entry in auths.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: auths[{registry!r}] is not a table")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                text = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ConfigError(f"{path}: auths[{registry!r}].auth is not base64") from None
            user, _, password = text.partition(":")
        else:
            user, password = str(entry.get("username", "")), str(entry.get("password", ""))
        key, value = _pair(str(registry), user, password, str(path))
        out[key] = value
    return out


def load_credentials_file(path: Path) -> Credentials:
    """Read a Docker config.json or a ``REGISTRY=USER:PASSWORD`` file.

    Raises:
        ConfigError: Unreadable or malformed (the message never contains a password).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read upstream credentials file {path}: {exc}") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise ConfigError(f"{path}: not valid JSON") from None
        return _docker_config(doc, path)
    lines = [line.strip() for line in text.splitlines()]
    return parse_credentials((line for line in lines if line and not line.startswith("#")),
                             where=str(path))  # fmt: skip
