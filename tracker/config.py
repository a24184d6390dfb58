"""Tracker configuration: flags, ``SHOAL_*`` environment variables and a TOML file.

Precedence, highest first: command-line flag, environment variable (``--peer-ttl`` →
``SHOAL_PEER_TTL``), key in the ``--config`` TOML file (``peer-ttl`` or ``peer_ttl``, at
top level or in a ``[tracker]`` table), built-in default. Parsed once, at the edge, into
a frozen :class:`TrackerConfig`; nothing else reads the environment.
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

from tracker.activity import DEFAULT_TRAFFIC_INTERVAL
from tracker.auth import ClusterKeys
from tracker.errors import ConfigError
from tracker.model import (
    DEFAULT_ANNOUNCE_INTERVAL,
    DEFAULT_MAX_ORIGIN_FETCHES,
    DEFAULT_PEER_TTL,
)

#: The tracker's registered default port (peer HTTP is 5050, peer P2P 5051).
DEFAULT_PORT: Final = 5052
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

#: (flag, kind, help): every setting, in --help order. Kinds: str, bool, duration, list, int.
FLAGS: Final = (
    ("listen", "str", f"HOST:PORT to serve on (default 0.0.0.0:{DEFAULT_PORT})"),
    ("store", "str", "'memory' (default), redis://HOST:PORT/DB or unix:///path/redis.sock"),
    ("admin-token", "str", "bearer token for admin mutations (default: mutations refused)"),
    ("cluster-secret", "str",
     "shared secret every /v1 request must be signed with; 'new,old' while rotating "
     "(default: /v1 open)"),
    ("mdns", "bool", "advertise _shoal-tracker._tcp.local. over mDNS (default on)"),
    ("mdns-interface", "list", "IPv4 address to advertise on, repeatable (default: all)"),
    ("announce-interval", "duration",
     f"peers announce this often (default {DEFAULT_ANNOUNCE_INTERVAL:g}s)"),
    ("peer-ttl", "duration", f"forget peers silent this long (default {DEFAULT_PEER_TTL:g}s)"),
    ("traffic-interval", "duration",
     "sample origin vs peer bytes for the status page's chart this often "
     f"(default {DEFAULT_TRAFFIC_INTERVAL:g}s)"),
    ("max-origin-fetches", "int",
     "origin fetches of one blob in flight cluster-wide, through leases; 0: no cap "
     f"(default {DEFAULT_MAX_ORIGIN_FETCHES})"),
)  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackerConfig:
    """Everything ``tracker.service.serve`` needs."""

    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    store: str = "memory"
    admin_token: str | None = field(default=None, repr=False)
    cluster_secret: str | None = field(default=None, repr=False)
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL
    peer_ttl: float = DEFAULT_PEER_TTL
    traffic_interval: float = DEFAULT_TRAFFIC_INTERVAL
    max_origin_fetches: int = DEFAULT_MAX_ORIGIN_FETCHES


def parse_duration(text: str | float) -> float:
    """``90s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds → seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?", str(text).strip())
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        raise ConfigError(f"not a duration: {text!r} (examples: 30s, 5m, 1h)")
    return sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` or ``HOST`` (default port) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]") or "0.0.0.0"
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def parse_bool(value: object, flag: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) or a TOML boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"--{flag} wants true or false, got {value!r}")


def build_parser(prog: str = "shoal tracker") -> argparse.ArgumentParser:
    """The argument parser; every flag defaults to None so the sources can be merged."""
    parser = argparse.ArgumentParser(prog=prog, description="Run the shoal tracker.")
    parser.add_argument("--config", type=Path, help="TOML file with any of these settings")
    for name, kind, help_text in FLAGS:
        if kind == "bool":
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, help=help_text)
        elif kind == "list":
            parser.add_argument(f"--{name}", action="append", help=help_text)
        else:
            parser.add_argument(f"--{name}", help=help_text)
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    return parser


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    table = doc.get("tracker", doc)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tracker] must be a table")
    known = {n for n, _, _ in FLAGS} | {n.replace("-", "_") for n, _, _ in FLAGS}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    return table


def load_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> TrackerConfig:
    """Merge flag > environment > TOML > default and validate.

    Args:
        args: Parsed flags (from :func:`build_parser`).
        environ: The environment (``os.environ`` by default).

    Returns:
        The configuration.

    Raises:
        ConfigError: A value is malformed or inconsistent; the message names the flag.
    """
    env = os.environ if environ is None else environ
    path = args.config or (Path(env["SHOAL_CONFIG"]) if env.get("SHOAL_CONFIG") else None)
    toml = _read_toml(path) if path is not None else {}
    raw: dict[str, Any] = {}
    for name, kind, _ in FLAGS:
        attr = name.replace("-", "_")
        value = getattr(args, attr, None)
        if value is None and (text := env.get("SHOAL_" + attr.upper())) is not None:
            value = [v.strip() for v in text.split(",") if v.strip()] if kind == "list" else text
        if value is None:
            value = toml.get(name, toml.get(attr))
        if value is not None:
            raw[attr] = value
    return _validate(raw)


def _validate(raw: Mapping[str, Any]) -> TrackerConfig:
    kw: dict[str, Any] = {}
    if "listen" in raw:
        kw["listen_host"], kw["listen_port"] = parse_hostport(str(raw["listen"]))
    if "store" in raw:
        store = str(raw["store"])
        if store != "memory" and not store.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--store wants memory, redis://… or unix://…, got {store!r}")
        kw["store"] = store
    if raw.get("admin_token"):
        kw["admin_token"] = str(raw["admin_token"])
    if raw.get("cluster_secret"):
        try:
            ClusterKeys.parse(str(raw["cluster_secret"]))
        except ValueError as exc:
            raise ConfigError(f"--cluster-secret: {exc}") from None
        kw["cluster_secret"] = str(raw["cluster_secret"])
    if "mdns" in raw:
        kw["mdns"] = parse_bool(raw["mdns"], "mdns")
    if "mdns_interface" in raw:
        items = raw["mdns_interface"]
        kw["mdns_interfaces"] = tuple(
            str(i) for i in (items if isinstance(items, list) else [items])
        )
    for key in ("announce_interval", "peer_ttl", "traffic_interval"):
        if key in raw:
            kw[key] = parse_duration(raw[key])
    if "max_origin_fetches" in raw:
        text = str(raw["max_origin_fetches"]).strip()
        if isinstance(raw["max_origin_fetches"], bool) or not text.isdigit():
            raise ConfigError(f"--max-origin-fetches wants a whole number, got {text!r}")
        kw["max_origin_fetches"] = int(text)
    config = TrackerConfig(**kw)
    if not 0 <= config.max_origin_fetches <= 100_000:
        raise ConfigError("--max-origin-fetches must be between 0 (no cap) and 100000")
    if not 1.0 <= config.announce_interval <= 3600.0:
        raise ConfigError("--announce-interval must be between 1s and 1h")
    if not 2 * config.announce_interval <= config.peer_ttl <= 86_400.0:
        raise ConfigError("--peer-ttl must be between twice --announce-interval and 1 day")
    if not 0.1 <= config.traffic_interval <= 3600.0:
        raise ConfigError("--traffic-interval must be between 100ms and 1h")
    return config


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> TrackerConfig:
    """Parse a command line (without the program name) into a configuration."""
    return load_config(build_parser().parse_args(list(argv)), environ)
