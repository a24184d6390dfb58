"""Configuration precedence (flag > env > TOML > default) and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.config import TrackerConfig, parse_args, parse_duration, parse_hostport
from tracker.errors import ConfigError


def test_defaults() -> None:
    assert parse_args([], environ={}) == TrackerConfig()
    assert (TrackerConfig().listen_host, TrackerConfig().listen_port) == ("0.0.0.0", 5052)
    assert TrackerConfig().mdns is True


def test_every_flag() -> None:
    config = parse_args(
        [
            "--listen", "127.0.0.1:6000", "--store", "redis://r:6379/2", "--admin-token", "t",
            "--no-mdns", "--mdns-interface", "127.0.0.1", "--mdns-interface", "10.0.0.1",
            "--announce-interval", "10s", "--peer-ttl", "1m", "--max-origin-fetches", "0",
        ],
        environ={},
    )  # fmt: skip
    assert config == TrackerConfig(
        listen_host="127.0.0.1",
        listen_port=6000,
        store="redis://r:6379/2",
        admin_token="t",
        mdns=False,
        mdns_interfaces=("127.0.0.1", "10.0.0.1"),
        announce_interval=10.0,
        peer_ttl=60.0,
        max_origin_fetches=0,
    )


def test_max_origin_fetches_from_env_and_toml(tmp_path: Path) -> None:
    assert TrackerConfig().max_origin_fetches == 16
    assert parse_args([], environ={"SHOAL_MAX_ORIGIN_FETCHES": "64"}).max_origin_fetches == 64
    toml = tmp_path / "t.toml"
    toml.write_text("max_origin_fetches = 4\n")
    assert parse_args(["--config", str(toml)], environ={}).max_origin_fetches == 4


def test_env_then_toml_then_default(tmp_path: Path) -> None:
    toml = tmp_path / "tracker.toml"
    toml.write_text(
        '[tracker]\nadmin-token = "from-toml"\nstore = "unix:///tmp/r.sock"\nmdns = false\n'
        'peer_ttl = "5m"\nmdns-interface = ["127.0.0.1"]\n'
    )
    env = {"SHOAL_CONFIG": str(toml), "SHOAL_ADMIN_TOKEN": "from-env", "SHOAL_MDNS": "yes"}
    config = parse_args(["--peer-ttl", "2m"], environ=env)
    assert config.admin_token == "from-env"  # env beats TOML
    assert config.store == "unix:///tmp/r.sock"  # TOML beats default
    assert config.mdns is True  # env "yes"
    assert config.peer_ttl == 120.0  # flag beats TOML
    assert config.mdns_interfaces == ("127.0.0.1",)
    assert config.listen_port == 5052  # default


def test_toml_at_top_level_and_env_lists(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text('listen = ":7000"\n')
    env = {"SHOAL_MDNS_INTERFACE": "127.0.0.1, 10.1.1.1"}
    config = parse_args(["--config", str(toml)], environ=env)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 7000)
    assert config.mdns_interfaces == ("127.0.0.1", "10.1.1.1")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--listen", "host:http"], {}, "--listen"),
        (["--listen", "h:70000"], {}, "--listen"),
        (["--store", "postgres://x"], {}, "--store"),
        (["--peer-ttl", "soon"], {}, "duration"),
        (["--announce-interval", "0.5s"], {}, "--announce-interval"),
        (["--announce-interval", "60s", "--peer-ttl", "90s"], {}, "--peer-ttl"),
        (["--peer-ttl", "2d"], {}, "duration"),
        ([], {"SHOAL_MDNS": "maybe"}, "--mdns"),
        (["--max-origin-fetches", "-1"], {}, "--max-origin-fetches"),
        (["--max-origin-fetches", "lots"], {}, "--max-origin-fetches"),
        (["--max-origin-fetches", "200000"], {}, "--max-origin-fetches"),
        ([], {"SHOAL_CONFIG": "/nonexistent/shoal.toml"}, "cannot read"),
    ],
)
def test_bad_settings(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args(argv, environ=env)


def test_unknown_toml_keys_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text("[tracker]\nadmin_tokn = 'typo'\n")
    with pytest.raises(ConfigError, match="admin_tokn"):
        parse_args(["--config", str(toml)], environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("1.2.3.4:5", ("1.2.3.4", 5)),
        (":80", ("0.0.0.0", 80)),
        ("[::1]:9", ("::1", 9)),
        ("h", ("h", 5052)),
    ],
)
def test_parse_hostport(text: str, pair: tuple[str, int]) -> None:
    assert parse_hostport(text) == pair


def test_cluster_secret_flag_and_env() -> None:
    secret = "0123456789abcdef-secret"
    assert parse_args([], environ={"SHOAL_CLUSTER_SECRET": secret}).cluster_secret == secret
    config = parse_args(["--cluster-secret", f"{secret},old-{secret}"], environ={})
    assert config.cluster_secret == f"{secret},old-{secret}"
    assert secret not in repr(config)
    assert "admin-token-value" not in repr(
        parse_args(["--admin-token", "admin-token-value"], environ={})
    )
    assert parse_args([], environ={}).cluster_secret is None
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        parse_args(["--cluster-secret", "short"], environ={})
