"""Configuration: flags > env > TOML > defaults, sizes and durations."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from peer.config import (
    PEER_FLAGS,
    add_flags,
    merged,
    parse_duration,
    parse_hostport,
    parse_size,
    peer_config,
)
from peer.errors import ConfigError


def _parse(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_flags(parser, PEER_FLAGS)
    return peer_config(merged(parser.parse_args(argv), PEER_FLAGS, env or {}))


@pytest.mark.parametrize(
    ("text", "value"),
    [("20GiB", 20 * 1024**3), ("512MiB", 512 * 1024**2), ("100MB", 100_000_000),
     ("1Gi", 1024**3), ("1.5k", 1500), ("10", 10), ("100MB/s", 100_000_000)],
)  # fmt: skip
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "GiB", "-1", "10 parsecs", "1e9"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("7", 7.0)],
)
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "1x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_hostport() -> None:
    assert parse_hostport("127.0.0.1:5050") == ("127.0.0.1", 5050)
    assert parse_hostport(":5051") == ("0.0.0.0", 5051)
    assert parse_hostport("[::1]:80") == ("::1", 80)
    with pytest.raises(ConfigError):
        parse_hostport("host:notaport")


def test_defaults() -> None:
    config = _parse([])
    assert config.listen == ("127.0.0.1", 5050)
    assert config.p2p_listen == ("0.0.0.0", 5051)
    assert config.default_registry == "docker.io"
    assert config.tracker == "auto"
    assert config.allows is None


def test_precedence_flag_env_toml(tmp_path: Path) -> None:
    toml = tmp_path / "shoal.toml"
    toml.write_text(
        'listen = "127.0.0.1:7000"\ncache-size = "1GiB"\ntag_ttl = "10m"\n'
        'upstream = { "docker.io" = "http://127.0.0.1:9" }\n'
    )
    config = _parse(
        ["--config", str(toml), "--listen", "127.0.0.1:7001"], {"SHOAL_CACHE_SIZE": "2GiB"}
    )
    assert config.listen == ("127.0.0.1", 7001)  # flag beats TOML
    assert config.cache_size == 2 * 1024**3  # env beats TOML
    assert config.tag_ttl == 600.0  # TOML beats default
    assert config.upstreams == {"docker.io": "http://127.0.0.1:9"}


def test_repeatable_upstream_from_env() -> None:
    config = _parse([], {"SHOAL_UPSTREAM": "docker.io=http://a:1,ghcr.io=http://b:2"})
    assert config.upstreams == {"docker.io": "http://a:1", "ghcr.io": "http://b:2"}


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "shoal.toml"
    toml.write_text("lisen = '127.0.0.1:1'\n")
    with pytest.raises(ConfigError, match="lisen"):
        _parse(["--config", str(toml)])


@pytest.mark.parametrize(
    "argv",
    [["--upstream", "docker.io"], ["--upstream", "x=ftp://y"], ["--tracker", "maybe"],
     ["--cache-size", "lots"], ["--tag-ttl", "soon"]],
)  # fmt: skip
def test_bad_flags(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        _parse(argv)


def test_cluster_secret_from_env_is_checked_and_hidden() -> None:
    secret = "0123456789abcdef-secret"
    config = _parse([], {"SHOAL_CLUSTER_SECRET": secret})
    assert config.cluster_secret == secret
    assert secret not in repr(config)
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        _parse(["--cluster-secret", "short"])
