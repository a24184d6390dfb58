"""allows.txt rules (DaoCloud's semantics) and reload on change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peer.mirror.allows import AllowList, Rules

RULES = """
# the Prometheus stack
docker.io/prom/*
docker.io/library/*
registry.k8s.io/**
quay.io/prometheus/node-exporter   # exact
"""


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("docker.io/prom/node-exporter", True),
        ("docker.io/prom/a/b", False),  # * is exactly one more segment
        ("docker.io/prom", False),
        ("docker.io/library/alpine", True),
        ("registry.k8s.io/pause", True),
        ("registry.k8s.io/a/b/c", True),  # ** is any depth
        ("registry.k8s.io", False),
        ("quay.io/prometheus/node-exporter", True),
        ("quay.io/prometheus/alertmanager", False),
        ("ghcr.io/x/y", False),
        ("docker.io/promx/y", False),  # prefix must end at a segment boundary
        ("DOCKER.IO/PROM/X", True),
    ],
)
def test_rules(image: str, allowed: bool) -> None:
    assert Rules.parse(RULES).allows(image) is allowed


def test_no_file_allows_everything() -> None:
    assert AllowList(None).allows("anything.io/x", now=0.0)


def test_reload_when_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "allows.txt"
    path.write_text("docker.io/library/*\n")
    allow = AllowList(path)
    assert allow.allows("docker.io/library/alpine", now=0.0)
    assert not allow.allows("ghcr.io/a/b", now=0.0)
    path.write_text("ghcr.io/**\n")
    os.utime(path, ns=(10**18, 10**18))  # a different mtime even on coarse clocks
    assert not allow.allows("ghcr.io/a/b", now=0.5)  # checked at most once a second
    assert allow.allows("ghcr.io/a/b", now=2.0)
    assert not allow.allows("docker.io/library/alpine", now=2.0)


def test_vanished_file_keeps_last_rules(tmp_path: Path) -> None:
    path = tmp_path / "allows.txt"
    path.write_text("docker.io/library/*\n")
    allow = AllowList(path)
    path.unlink()
    assert allow.allows("docker.io/library/alpine", now=5.0)


def test_shipped_allows_file_parses() -> None:
    shipped = Path(__file__).resolve().parents[3] / "allows.txt"
    rules = Rules.parse(shipped.read_text())
    assert rules.allows("docker.io/prom/node-exporter")
    assert rules.allows("registry.k8s.io/pause")
    assert not rules.allows("example.com/evil/image")
