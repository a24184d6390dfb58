"""deploy/Containerfile: read, not built (CI has no image builder with a base image).

What can be checked without building: the entrypoint is the console script pyproject
declares, everything the build copies exists and is not excluded by the ignore file,
every package pyproject ships is copied, the image's uid is the one the Kubernetes
manifests run as, and the exposed ports are the ones the manifests and units use.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import tomllib
from typing import Any, Final

import pytest

from tests.deploy.cluster import DEPLOY, ROOT, container, find, prepare_tree
from tests.deploy.kustomize import Obj, render

CONTAINERFILE: Final = DEPLOY / "Containerfile"
IGNORE_FILE: Final = DEPLOY / "Containerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Containerfile ends inside a continued line"
    return out


def of(word: str) -> list[str]:
    return [rest for w, rest in instructions() if w == word]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    result = False
    for raw in IGNORE_FILE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            result = not negate
    return result


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    tree = prepare_tree(tmp_path_factory.mktemp("deploy"))
    return render(tree / "overlays" / "production")


def test_entrypoint_is_the_console_script() -> None:
    (entrypoint,) = of("ENTRYPOINT")
    scripts = pyproject()["project"]["scripts"]
    assert json.loads(entrypoint) == ["shoal"]
    assert "shoal" in scripts
    # The console script is on PATH in the final stage.
    assert any("PATH=/opt/shoal/bin:" in env for env in of("ENV"))


def test_peer_cache_is_the_volume() -> None:
    """Non-root, the peer's default cache is ~/.cache; the image points it at its volume."""
    (volume,) = of("VOLUME")
    (path,) = json.loads(volume)
    assert any(f"SHOAL_DATA={path}" in env.split() for env in of("ENV"))


def test_two_stages_from_one_python() -> None:
    froms = of("FROM")
    assert len(froms) == 2
    assert froms[0].endswith(" AS build")
    (arg,) = [a for a in of("ARG") if a.startswith("PYTHON_IMAGE=")]
    python = arg.split(":")[-1]
    required = pyproject()["project"]["requires-python"]
    assert required == ">=3.11"
    assert python.startswith("3.11")
    assert "--from=build" in of("COPY")[-1]


def test_copied_sources_exist_and_are_not_ignored() -> None:
    sources = []
    for args in of("COPY"):
        words = shlex.split(args)
        if words[0].startswith("--from"):
            continue
        sources += words[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not ignored(src.rstrip("/")), f"{src} is excluded by {IGNORE_FILE.name}"
        for path in (ROOT / src).rglob("*.py") if (ROOT / src).is_dir() else []:
            rel = str(path.relative_to(ROOT))
            assert not ignored(rel), f"{rel} is excluded by {IGNORE_FILE.name}"
    # Everything the wheel is built from: the packages pyproject ships, its readme.
    project = pyproject()
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") + "/" in sources, pattern
    assert project["project"]["readme"] in sources
    assert ignored(".venv")
    assert ignored("tests")


def test_image_uid_is_the_manifests_uid(objects: list[Obj]) -> None:
    (user,) = of("USER")
    uid = int(user.split(":")[0])
    assert uid >= 1000
    peer = find(objects, "DaemonSet", "shoal-peer")
    assert container(peer, "peer")["securityContext"]["runAsUser"] == uid
    assert container(peer, "cache-owner")["command"][1] == user
    tracker = find(objects, "Deployment", "shoal-tracker")
    assert tracker["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_exposed_ports_are_the_default_ports(objects: list[Obj]) -> None:
    (expose,) = of("EXPOSE")
    ports = {int(p) for p in expose.split()}
    peer = find(objects, "DaemonSet", "shoal-peer")
    tracker = find(objects, "Deployment", "shoal-tracker")
    manifest_ports = {
        p["containerPort"]
        for c in (container(peer, "peer"), container(tracker, "tracker"))
        for p in c["ports"]
    }
    assert ports == manifest_ports == {5050, 5051, 5052}
