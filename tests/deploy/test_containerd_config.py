"""The DaemonSet's containerd configuration works with a real containerd and a real peer.

The init container's command is taken from the rendered DaemonSet and run as it is,
with two substitutions a test machine needs: ``--mirror`` names the test's peer (on a
free port, not 5050) and ``--out`` a temporary directory instead of the node's
``/etc/containerd/certs.d``. The peer runs with the DaemonSet's own flags, environment
and allows.txt ConfigMap, less the addresses and paths that belong to a node.

Docker Hub cannot be reached from CI, so ``--upstream docker.io=<test registry>`` tells
the peer where "docker.io" lives; a pull that succeeds therefore went through the peer.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path
from typing import Final

import pytest

from tests.deploy.cluster import (
    ROOT,
    container,
    container_env,
    expand,
    find,
    flag_name,
    flag_value,
    prepare_tree,
)
from tests.deploy.kustomize import Obj, render
from tests.helpers import procs
from tests.helpers.node import spawn_node
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd

#: What a node's hosts.toml falls back to: the real registries.
REAL_SERVERS: Final = {"docker.io": "https://registry-1.docker.io"}
#: Node-specific settings the test replaces (spawn_node sets --listen, --data, --tracker).
NODE_FLAGS: Final = {"--listen", "--data", "--tracker", "--p2p-listen", "--allows"}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    tree = prepare_tree(tmp_path_factory.mktemp("deploy"))
    return render(tree / "overlays" / "production")


def _with(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced (``--flag=value`` or ``--flag value``)."""
    out, skip = [], False
    for n, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == flag:
            out += [flag, value]
            skip = n + 1 < len(args)
        elif arg.startswith(flag + "="):
            out.append(f"{flag}={value}")
        else:
            out.append(arg)
    assert flag_value(out, flag) == value, f"{flag} not in {args}"
    return out


def init_args(objects: list[Obj]) -> list[str]:
    """The init container's arguments: ``config containerd --mirror=... ...``."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    args: list[str] = container(peer, "containerd-config")["args"]
    assert args[:2] == ["config", "containerd"]
    return args


def write_hosts_dir(objects: list[Obj], out: Path, mirror: str) -> list[str]:
    """Run the DaemonSet's init container command; returns its registries."""
    args = init_args(objects)
    argv = _with(_with(args, "--mirror", mirror), "--out", str(out))
    result = subprocess.run(
        [sys.executable, "-m", "peer", *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"shoal {' '.join(argv)}: {result.stderr}"
    return flag_value(args, "--registries").split(",")


def daemonset_peer(objects: list[Obj], tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The peer container's flags and SHOAL_* environment, placed on this machine."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    c = container(peer, "peer")
    assert c["args"][0] == "peer"
    env = container_env(
        objects, c, field_values={"status.hostIP": "127.0.0.1", "spec.nodeName": "test-node"}
    )
    args = [expand(a, env) for a in c["args"][1:]]
    allows_text = find(objects, "ConfigMap", "shoal-allows")["data"]["allows.txt"]
    allows = tmp / "allows" / Path(flag_value(args, "--allows")).name
    allows.parent.mkdir(parents=True)
    allows.write_text(allows_text, encoding="utf-8")
    args = [a for a in args if flag_name(a) not in NODE_FLAGS]
    args += ["--p2p-listen", f"127.0.0.1:{procs.free_port()}", "--allows", str(allows)]
    return args, {k: v for k, v in env.items() if k.startswith("SHOAL_")}


def _through_shoal(registry: Registry, name: str) -> int:
    return sum(
        1
        for r in registry.requests()
        if r.path.startswith(f"/v2/{name}/") and "shoal" in r.user_agent
    )


@pytest.mark.slow
def test_daemonset_hosts_toml_pulls_through_the_daemonset_peer(
    objects: list[Obj], registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    name = registry.new_repo("library/deploy")
    image = registry.push_oci_image(name, "v1", layer_sizes=[150_000, 40_000])
    args, env = daemonset_peer(objects, tmp_path)
    with spawn_node(tmp_path / "data", *args, "--upstream", f"docker.io={registry.url}",
                    env=env) as node:  # fmt: skip
        hosts = tmp_path / "certs.d"
        registries = write_hosts_dir(objects, hosts, node.url)
        for reg in registries:
            doc = tomllib.loads((hosts / reg / "hosts.toml").read_text(encoding="utf-8"))
            assert doc["server"] == REAL_SERVERS.get(reg, f"https://{reg}"), reg
            assert list(doc["host"]) == [node.url], reg
            assert set(doc["host"][node.url]["capabilities"]) == {"pull", "resolve"}, reg
        ref = f"docker.io/{name}:v1"
        result = containerd.pull(ref, hosts)
        assert result.returncode == 0, result.stderr + node.log.read_text()
        assert containerd.image_digest(ref) == image.digest
        assert _through_shoal(registry, name) > 0


@pytest.mark.slow
def test_daemonset_hosts_toml_falls_back_without_a_peer(
    objects: list[Obj], registry: Registry, containerd: Containerd, tmp_path: Path
) -> None:
    """A node whose peer is gone still pulls, from ``server`` (here: the test registry)."""
    name = registry.new_repo("library/fallback")
    image = registry.push_oci_image(name, "v1", layer_sizes=[30_000])
    hosts = tmp_path / "certs.d"
    dead = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens: the peer is down
    write_hosts_dir(objects, hosts, dead)
    path = hosts / "docker.io" / "hosts.toml"
    text = path.read_text(encoding="utf-8")
    real = f'server = "{REAL_SERVERS["docker.io"]}"'
    assert real in text
    path.write_text(text.replace(real, f'server = "{registry.url}"'), encoding="utf-8")
    ref = f"docker.io/{name}:v1"
    started = time.monotonic()
    result = containerd.pull(ref, hosts)
    assert result.returncode == 0, result.stderr
    assert containerd.image_digest(ref) == image.digest
    assert _through_shoal(registry, name) == 0
    # The short dial timeout: a dead mirror costs a pull little.
    assert time.monotonic() - started < 20


def rollback_script() -> str:
    """The shell block of docs/deploy.md that removes shoal's hosts.toml files."""
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^[ ]*```sh\n(.*?)^[ ]*```", text, re.M | re.S)
    (block,) = [b for b in blocks if "certs.d/*/hosts.toml" in b]
    return textwrap.dedent(block)


def test_documented_rollback_removes_only_shoals_files(objects: list[Obj], tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    registries = write_hosts_dir(objects, certs, "http://127.0.0.1:5050")
    theirs = certs / "registry.example.com" / "hosts.toml"
    theirs.parent.mkdir()
    theirs.write_text('server = "https://registry.example.com"\n', encoding="utf-8")
    script = rollback_script().replace("/etc/containerd/certs.d", str(certs))
    result = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert list(certs.rglob("hosts.toml")) == [theirs]
    assert registries
