"""deploy/systemd: the units pass ``systemd-analyze verify`` and run flags the CLI accepts.

``systemd-analyze verify`` checks unit syntax and directives but knows nothing of shoal's
flags, so every unit is also parsed here: its ``ExecStart`` flags must be listed by
``shoal <command> --help``, its environment file may set only ``SHOAL_*`` variables
that name flags, and flags and environment together must make a valid configuration.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from peer.config import PEER_FLAGS, add_flags, merged, peer_config
from tests.deploy.cluster import SYSTEMD, cli_flags, env_flag, flag_name, flag_value
from tracker.config import parse_args as tracker_parse_args

UNITS: Final = sorted(SYSTEMD.glob("*.service"))
INSTALLED_BINARY: Final = "/opt/shoal/bin/shoal"

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Sections → (key, value) in order; continuation lines joined; comments dropped."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def get(unit: Unit, section: str, key: str) -> str:
    (value,) = [v for k, v in unit.get(section, []) if k == key]
    return value


def parse_env_file(path: Path, *, include_commented: bool = False) -> dict[str, str]:
    """systemd ``EnvironmentFile=`` syntax (KEY=VALUE, ``#`` comments, optional quotes).

    With ``include_commented``, ``#SHOAL_X=...`` example lines count too.
    """
    env = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if include_commented and line.startswith("#SHOAL_"):
            line = line[1:]
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip().strip("\"'")
    return env


def exec_start(unit: Unit) -> list[str]:
    return shlex.split(get(unit, "Service", "ExecStart"))


def env_file_of(unit: Unit) -> Path:
    installed = get(unit, "Service", "EnvironmentFile").lstrip("-")
    assert installed.startswith("/etc/shoal/")
    return SYSTEMD / Path(installed).name


def test_units_exist() -> None:
    assert [u.name for u in UNITS] == ["shoal-peer.service", "shoal-tracker.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed; the units were parsed and checked alone")
    # verify checks that ExecStart's binary exists: point it at this checkout's console script.
    shoal = Path(sys.executable).parent / "shoal"
    assert shoal.exists()
    text = path.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(shoal))
    (tmp_path / path.name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", path.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    ours = [line for line in (result.stdout + result.stderr).splitlines() if path.name in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], "\n".join(ours)


def test_systemd_analyze_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "shoal-bad.service"
    unit.write_text(f"[Service]\nExecStart={sys.executable} -V\nDynamikUser=yes\n")
    result = subprocess.run(
        [analyze, "verify", "--man=no", unit.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "DynamikUser" in result.stderr


@pytest.mark.parametrize("command", ["peer", "tracker"])
def test_console_script_help_round_trip(command: str) -> None:
    """The installed ``shoal`` script, as ExecStart runs it, lists the flags checked below."""
    shoal = Path(sys.executable).parent / "shoal"
    result = subprocess.run(
        [str(shoal), command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: shoal {command}")
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout)) == cli_flags(command)


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_exec_start_runs_shoal_with_accepted_flags(path: Path) -> None:
    argv = exec_start(parse_unit(path))
    assert argv[0] == INSTALLED_BINARY
    command = argv[1]
    assert path.name == f"shoal-{command}.service"
    flags = {flag_name(a) for a in argv[2:]} - {None}
    assert flags
    assert flags <= cli_flags(command), flags - cli_flags(command)


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_environment_file_sets_only_flags(path: Path) -> None:
    unit = parse_unit(path)
    command = exec_start(unit)[1]
    env = parse_env_file(env_file_of(unit), include_commented=True)
    assert env
    for key in env:
        assert key.startswith("SHOAL_"), key
        assert env_flag(key) in cli_flags(command), key


@pytest.mark.parametrize("include_commented", [False, True])
def test_peer_unit_settings_parse(include_commented: bool) -> None:
    unit = parse_unit(SYSTEMD / "shoal-peer.service")
    argv = exec_start(unit)[2:]
    env = parse_env_file(env_file_of(unit), include_commented=include_commented)
    parser = argparse.ArgumentParser()
    add_flags(parser, PEER_FLAGS)
    config = peer_config(merged(parser.parse_args(argv), PEER_FLAGS, environ=env))
    assert config.listen == ("127.0.0.1", 5050)
    assert config.p2p_listen[1] == 5051
    # The cache lives in the unit's StateDirectory.
    assert str(config.data) == f"/var/lib/{get(unit, 'Service', 'StateDirectory')}"
    assert config.allows is not None
    assert config.allows.parent == Path(f"/etc/{get(unit, 'Service', 'ConfigurationDirectory')}")


@pytest.mark.parametrize("include_commented", [False, True])
def test_tracker_unit_settings_parse(include_commented: bool) -> None:
    unit = parse_unit(SYSTEMD / "shoal-tracker.service")
    argv = exec_start(unit)[2:]
    env = parse_env_file(env_file_of(unit), include_commented=include_commented)
    config = tracker_parse_args(argv, environ=env)
    assert config.listen_port == int(flag_value(argv, "--listen").rsplit(":", 1)[1]) == 5052
    assert config.admin_token


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_run_unprivileged_and_restart(path: Path) -> None:
    unit = parse_unit(path)
    assert get(unit, "Service", "DynamicUser") == "yes"
    assert get(unit, "Service", "NoNewPrivileges") == "yes"
    assert get(unit, "Service", "Restart") == "on-failure"
    assert get(unit, "Install", "WantedBy") == "multi-user.target"
