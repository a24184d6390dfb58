"""The operator tools through the ``shoal`` command itself, against a ``shoal peer`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import procs
from tests.helpers.node import spawn_node
from tests.helpers.registry import Registry


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return procs.run([sys.executable, "-m", "peer", *args], timeout=60)


def test_help_lists_the_operator_commands() -> None:
    result = shoal("--help")
    assert result.returncode == 0
    for command in ("sync", "verify", "status", "config"):
        assert f"  {command} " in result.stdout


def test_sync_verify_status_against_a_node_process(registry: Registry, tmp_path: Path) -> None:
    name = registry.new_repo("library/cmd")
    image = registry.push_oci_image(name, "v1", layer_sizes=[25_000])
    listing = tmp_path / "images.txt"
    listing.write_text(f"{name}:v1\n")
    upstream = f"docker.io={registry.url}"
    with spawn_node(tmp_path / "data", "--upstream", upstream) as node:
        synced = shoal("sync", "-f", str(listing), "--peer", node.url)
        assert synced.returncode == 0, procs.describe(synced)
        assert f"synced docker.io/{name}:v1 {image.digest}" in synced.stdout
        verified = shoal("verify", f"{name}:v1", "--peer", node.url, "--upstream", upstream)
        assert verified.returncode == 0, procs.describe(verified)
        assert verified.stdout.splitlines()[:2] == [
            f"Image docker.io/{name}:v1 is verified.",
            f"Digest: {image.digest}",
        ]
        status = shoal("status", "-f", str(listing), "--peer", node.url,
                       "--data", str(tmp_path / "data"), "--upstream", upstream)  # fmt: skip
        assert status.returncode == 0, procs.describe(status)
        assert status.stdout.splitlines() == [
            f"synced docker.io/{name}:v1",
            "status: 1 of 1 image(s) synced",
        ]
