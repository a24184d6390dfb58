"""Node configuration: flags, ``SHOAL_*`` environment variables and a TOML file, parsed once.

Precedence, highest first: command-line flag, environment variable (``--cache-size`` →
``SHOAL_CACHE_SIZE``), key in the ``--config`` TOML file (``cache-size`` or ``cache_size``),
built-in default. Repeatable flags (``--upstream``) take a comma-separated list in the
environment and an array (or a table ``{registry = url}``) in TOML.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from peer.errors import ConfigError
from tracker.auth import ClusterKeys

_SIZE_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str | int) -> int:
    """``20GiB`` → bytes; SI and IEC suffixes, case-insensitive; ``/s`` is ignored for rates."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)(?:/s)?\s*", text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"not a size: {text!r} (examples: 512MiB, 20GiB, 100MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(text: str | float) -> float:
    """``90s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds → seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ConfigError(f"not a duration: {text!r} (examples: 30s, 5m, 1h)")
    return sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ConfigError(f"not HOST:PORT: {text!r}")
        host, port = text, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"bad port in {text!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """Everything ``shoal peer`` needs, validated."""

    listen: tuple[str, int] = ("127.0.0.1", 5050)
    p2p_listen: tuple[str, int] = ("0.0.0.0", 5051)
    advertise_addr: str | None = None
    data: Path = Path("/var/lib/shoal")
    cache_size: int = 20 * 1024**3
    upstreams: Mapping[str, str] = field(default_factory=dict)
    default_registry: str = "docker.io"
    allows: Path | None = None
    tracker: str = "auto"
    tag_ttl: float = 300.0
    origin_timeout: float = 30.0
    upload_rate: int | None = None
    download_rate: int | None = None
    cluster_secret: str | None = field(default=None, repr=False)
    node_id: str | None = None
    #: Registry → (user, password): the node's own credentials; such a registry is private.
    upstream_credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: Mutual TLS on the P2P port: this node's certificate and key, and the cluster CA.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None


# (flag, help, kind) — kind: str | size | duration | hostport | path | list | rate
PEER_FLAGS: Final = [
    ("listen", "registry endpoint HOST:PORT (default 127.0.0.1:5050)", "hostport"),
    ("p2p-listen", "peer-to-peer HOST:PORT (default 0.0.0.0:5051)", "hostport"),
    ("advertise-addr", "address other nodes use to reach this one", "str"),
    ("data", "cache directory (default /var/lib/shoal, or ~/.cache/shoal when not root)", "path"),
    ("cache-size", "cache quota, e.g. 20GiB (default 20GiB)", "size"),
    (
        "upstream",
        "REGISTRY=URL, repeatable (default docker.io=https://registry-1.docker.io)",
        "list",
    ),
    ("default-registry", "registry for names without one (default docker.io)", "str"),
    ("allows", "allows.txt whitelist (default: allow all)", "path"),
    ("tracker", "tracker URL, 'auto' (mDNS) or 'none' (default auto)", "str"),
    ("tag-ttl", "revalidate tags with the origin after this long (default 5m)", "duration"),
    (
        "origin-timeout",
        "give up on an origin that sends nothing for this long (default 30s)",
        "duration",
    ),
    ("upload-rate", "P2P upload limit in bytes/s, e.g. 100MB (default unlimited)", "size"),
    ("download-rate", "P2P download limit in bytes/s (default unlimited)", "size"),
    (
        "cluster-secret",
        "shared secret that authenticates peers and tracker traffic; 'new,old' while rotating",
        "str",
    ),
    ("node-id", "stable id of this node (default: derived from the data dir)", "str"),
    (
        "upstream-credentials",
        "REGISTRY=USER:PASSWORD for a private registry, repeatable; its content is then "
        "served only to clients the registry accepts",
        "list",
    ),
    (
        "upstream-credentials-file",
        "Docker config.json (or REGISTRY=USER:PASSWORD lines) with upstream credentials",
        "path",
    ),
    ("tls-cert", "PEM certificate of this node for mutual TLS on the P2P port", "path"),
    ("tls-key", "PEM private key of --tls-cert", "path"),
    ("tls-ca", "PEM CA that signs every node's certificate (mutual TLS on the P2P port)", "path"),
]


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[tuple[str, str, str]]) -> None:
    """Add ``--config`` and every flag with default ``None`` (so sources can be merged)."""
    parser.add_argument("--config", type=Path, help="TOML file with any of these settings")
    for name, help_text, kind in flags:
        if kind == "list":
            parser.add_argument(f"--{name}", action="append", help=help_text)
        else:
            parser.add_argument(f"--{name}", help=help_text)


def merged(
    args: argparse.Namespace,
    flags: Sequence[tuple[str, str, str]],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge flag > env > TOML for every flag; values are raw (strings, lists)."""
    env = os.environ if environ is None else environ
    toml: dict[str, Any] = {}
    config_path = args.config or (Path(env["SHOAL_CONFIG"]) if env.get("SHOAL_CONFIG") else None)
    if config_path is not None:
        try:
            toml = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
    out: dict[str, Any] = {}
    known = {name for name, _, _ in flags} | {name.replace("-", "_") for name, _, _ in flags}
    unknown = set(toml) - known
    if unknown:
        raise ConfigError(f"unknown keys in {config_path}: {', '.join(sorted(unknown))}")
    for name, _, kind in flags:
        attr = name.replace("-", "_")
        value = getattr(args, attr, None)
        if value is None:
            env_value = env.get("SHOAL_" + attr.upper())
            if env_value is not None:
                value = [v for v in env_value.split(",") if v] if kind == "list" else env_value
        if value is None:
            value = toml.get(name, toml.get(attr))
            if kind == "list" and isinstance(value, dict):
                value = [f"{k}={v}" for k, v in value.items()]
        if value is not None:
            out[attr] = value
    return out


def _parse_upstreams(items: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        registry, sep, url = str(item).partition("=")
        if not sep or not registry or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--upstream wants REGISTRY=http(s)://URL, got {item!r}")
        from peer.mirror.names import canonical_registry

        result[canonical_registry(registry.strip())] = url.strip().rstrip("/")
    return result


def _credentials(raw: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    from peer.mirror.credentials import load_credentials_file, parse_credentials

    found = {}
    if "upstream_credentials_file" in raw:
        found.update(load_credentials_file(Path(raw["upstream_credentials_file"])))
    if "upstream_credentials" in raw:  # flags win over the file
        found.update(parse_credentials(raw["upstream_credentials"]))
    return found


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/shoal")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoal"


def peer_config(raw: Mapping[str, Any]) -> PeerConfig:
    """Validate merged raw settings into a :class:`PeerConfig`.

    Raises:
        ConfigError: with the offending flag named.
    """
    kw: dict[str, Any] = {}
    try:
        if "listen" in raw:
            kw["listen"] = parse_hostport(str(raw["listen"]), default_port=5050)
        if "p2p_listen" in raw:
            kw["p2p_listen"] = parse_hostport(str(raw["p2p_listen"]), default_port=5051)
        for key in ("advertise_addr", "default_registry", "tracker", "cluster_secret", "node_id"):
            if key in raw:
                kw[key] = str(raw[key])
        kw["data"] = Path(raw["data"]) if "data" in raw else default_data_dir()
        if "allows" in raw:
            kw["allows"] = Path(raw["allows"])
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if key in raw:
                kw[key] = Path(raw[key])
        if "cache_size" in raw:
            kw["cache_size"] = parse_size(raw["cache_size"])
        for key in ("upload_rate", "download_rate"):
            if key in raw:
                kw[key] = parse_size(raw[key]) or None
        for key in ("tag_ttl", "origin_timeout"):
            if key in raw:
                kw[key] = parse_duration(raw[key])
        if "upstream" in raw:
            kw["upstreams"] = _parse_upstreams(raw["upstream"])
        kw["upstream_credentials"] = _credentials(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad setting: {exc}") from exc
    if kw.get("cluster_secret") is not None:
        try:
            ClusterKeys.parse(kw["cluster_secret"])
        except ValueError as exc:
            raise ConfigError(f"--cluster-secret: {exc}") from None
    tls: list[Path] = [kw[key] for key in ("tls_cert", "tls_key", "tls_ca") if key in kw]
    if len(tls) not in (0, 3):
        raise ConfigError("--tls-cert, --tls-key and --tls-ca go together")
    if tls:
        from peer.mesh.tls import MeshTLS

        MeshTLS.load(*tls)  # fail at start, with the flag named, not at the first link
    tracker = kw.get("tracker", "auto")
    if tracker not in ("auto", "none") and not tracker.startswith(("http://", "https://")):
        raise ConfigError(f"--tracker wants a URL, 'auto' or 'none', got {tracker!r}")
    return PeerConfig(**kw)
