"""The far origin of the end-to-end benchmark (bench/far_origin): shaping in a private
network namespace limits what the origin's port sends, and only that."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import far_origin
from tests.bench.far_probe import BYTES
from tests.helpers import procs


def test_the_loopback_is_never_shaped_outside_the_benchmarks_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(far_origin.ENV, raising=False)
    with pytest.raises(RuntimeError, match="only done in the benchmark's own namespace"):
        far_origin.shape(5000, 100)


def test_what_the_origin_sends_is_shaped_and_counted_and_nothing_else() -> None:
    procs.require_root("a network namespace")
    procs.require_binary("tc", "iproute2")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    rate_mbit = 80.0
    cmd = [sys.executable, "-c", "import sys; from bench import far_origin; "
           "sys.exit(far_origin.run_inside('tests.bench.far_probe', sys.argv[1:]))",
           str(rate_mbit)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != far_origin.ENV}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    least = BYTES * 8 / (rate_mbit * 1e6)  # 0.42 s at 80 Mbit/s
    assert got["shaped"] >= 0.8 * least  # (htb lets one 256 KiB burst through at once)
    assert got["unshaped"] < least / 4
    assert BYTES <= got["counted"] <= BYTES * 1.05  # payload plus headers
    # the namespace is gone afterwards
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == before
