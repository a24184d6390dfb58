"""``shoal config``: renderers (pure tables) and the command's files and messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from peer.ops import runtime_config as rc
from peer.ops.cli import USAGE, cmd_config

LOCAL = rc.Mirror.parse("http://127.0.0.1:5050")


@pytest.mark.parametrize(
    ("text", "url", "host", "secure"),
    [
        ("http://127.0.0.1:5050", "http://127.0.0.1:5050", "127.0.0.1:5050", False),
        ("127.0.0.1:5050", "http://127.0.0.1:5050", "127.0.0.1:5050", False),
        ("https://mirror.internal/", "https://mirror.internal", "mirror.internal", True),
        ("http://[::1]:5050", "http://[::1]:5050", "[::1]:5050", False),
    ],
)
def test_mirror_parse(text: str, url: str, host: str, secure: bool) -> None:
    assert rc.Mirror.parse(text) == rc.Mirror(url, host, secure)


@pytest.mark.parametrize("text", ["ftp://x", "http://", "http://host/path", "http://a:b:c/x"])
def test_mirror_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--mirror"):
        rc.Mirror.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docker.io", ("docker.io",)),
        ("docker.io, ghcr.io,,index.docker.io", ("docker.io", "ghcr.io")),
        ("Quay.IO,localhost:5000", ("quay.io", "localhost:5000")),
    ],
)
def test_parse_registries(text: str, expected: tuple[str, ...]) -> None:
    assert rc.parse_registries(text) == expected


@pytest.mark.parametrize("text", ["", ",", "library", "not a host"])
def test_parse_registries_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        rc.parse_registries(text)


def test_containerd_hosts_toml() -> None:
    files = rc.containerd_hosts(LOCAL, ["docker.io", "ghcr.io"])
    assert sorted(files) == ["docker.io/hosts.toml", "ghcr.io/hosts.toml"]
    hub = tomllib.loads(files["docker.io/hosts.toml"])
    assert hub == {
        "server": "https://registry-1.docker.io",
        "host": {
            "http://127.0.0.1:5050": {"capabilities": ["pull", "resolve"], "dial_timeout": "200ms"}
        },
    }
    assert tomllib.loads(files["ghcr.io/hosts.toml"])["server"] == "https://ghcr.io"
    assert files["docker.io/hosts.toml"].startswith("# Written by `shoal config containerd`")


def test_containerd_fallback_override() -> None:
    files = rc.containerd_hosts(LOCAL, ["docker.io"], fallbacks={"docker.io": "http://10.0.0.9"})
    assert tomllib.loads(files["docker.io/hosts.toml"])["server"] == "http://10.0.0.9"


def test_registries_conf_http_mirror() -> None:
    doc = tomllib.loads(rc.registries_conf(LOCAL, ["docker.io", "quay.io"]))
    assert doc == {
        "registry": [
            {"prefix": "docker.io", "location": "docker.io",
             "mirror": [{"location": "127.0.0.1:5050/docker.io", "insecure": True}]},
            {"prefix": "quay.io", "location": "quay.io",
             "mirror": [{"location": "127.0.0.1:5050/quay.io", "insecure": True}]},
        ]
    }  # fmt: skip


def test_registries_conf_https_mirror_and_fallback() -> None:
    mirror = rc.Mirror.parse("https://mirror.internal:8443")
    doc = tomllib.loads(
        rc.registries_conf(mirror, ["ghcr.io"], fallbacks={"ghcr.io": "https://ghcr.corp/"})
    )
    assert doc["registry"] == [
        {"prefix": "ghcr.io", "location": "ghcr.corp",
         "mirror": [{"location": "mirror.internal:8443/ghcr.io"}]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("mirror", "existing", "expected"),
    [
        ("http://127.0.0.1:5050", None, {"registry-mirrors": ["http://127.0.0.1:5050"]}),
        # an http node off loopback must also be an insecure registry for dockerd
        ("http://10.1.2.3:5050", None,
         {"registry-mirrors": ["http://10.1.2.3:5050"], "insecure-registries": ["10.1.2.3:5050"]}),
        ("https://m.example", None, {"registry-mirrors": ["https://m.example"]}),
        # other settings are kept; the node goes first; no duplicate
        ("http://localhost:5050",
         {"log-driver": "journald", "registry-mirrors": ["https://other", "http://localhost:5050/"]},
         {"log-driver": "journald", "registry-mirrors": ["http://localhost:5050", "https://other"]}),
    ],
)  # fmt: skip
def test_docker_daemon_json(mirror: str, existing: dict[str, object] | None,
                            expected: dict[str, object]) -> None:  # fmt: skip
    assert json.loads(rc.docker_daemon_json(rc.Mirror.parse(mirror), existing)) == expected


def test_config_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_config(["containerd", "--registries", "docker.io,ghcr.io"]) == 0
    out = capsys.readouterr().out
    assert "# --- docker.io/hosts.toml ---" in out
    assert 'server = "https://registry-1.docker.io"' in out
    assert '[host."http://127.0.0.1:5050"]' in out
    assert "# --- ghcr.io/hosts.toml ---" in out


def test_config_docker_says_hub_only_and_merges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "daemon.json").write_text('{"data-root": "/srv/docker"}')
    assert cmd_config(["docker", "--mirror", "http://127.0.0.1:5999", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "Docker Hub (docker.io) only" in err
    assert json.loads((tmp_path / "daemon.json").read_text()) == {
        "data-root": "/srv/docker", "registry-mirrors": ["http://127.0.0.1:5999"],
    }  # fmt: skip


def test_config_writes_tree(tmp_path: Path) -> None:
    assert cmd_config(["containerd", "--out", str(tmp_path / "certs.d")]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [f"certs.d/{r}/hosts.toml" for r in sorted(rc.DEFAULT_REGISTRIES)]
    assert cmd_config(["podman", "--out", str(tmp_path / "conf.d")]) == 0
    assert (tmp_path / "conf.d" / "50-shoal.conf").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["podman", "--mirror", "ftp://x"], "--mirror wants"),
        (["containerd", "--registries", "not a host"], "is not a registry host"),
        (["containerd", "--fallback", "docker.io"], "REGISTRY=http(s)://URL"),
    ],
)
def test_config_bad_input(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_config(argv) == USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_config_unreadable_daemon_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "daemon.json").write_text("{not json")
    assert cmd_config(["docker", "--out", str(tmp_path)]) == USAGE
    assert "is not readable JSON" in capsys.readouterr().err
    assert (tmp_path / "daemon.json").read_text() == "{not json"  # left alone
