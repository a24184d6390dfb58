"""A simulator run repeats for its ``Config.seed`` whatever the process's string-hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")

ROOT = Path(__file__).resolve().parents[2]

# A small shipped flash crowd (well under a second): the tracker's lookups draw from its
# sets of peer ids, which a plain ``str`` id would order by the process's hash seed.
RUN = """
import json
from bench.sim.model import SHIPPED, Config, Simulation

cfg = Config(nodes=40, size=8 << 20, up=20e6, down=40e6, origin_up=20e6, origin_rtt=0.005,
             max_time=60.0, seed=3, **SHIPPED)
out = Simulation(cfg).run().to_json()
out.pop("wall")
out["costs"] = {k: v[0] for k, v in out["costs"].items()}  # call counts (not seconds)
print(json.dumps(out, sort_keys=True, default=repr))
"""

HASHES = """
from bench.sim.state import PeerId, str_hash0

for s in ["", "a", "node-00000", "node-12345", "abcdefgh", "x" * 41, "é", "€uro", "\\U0001f600"]:
    assert str_hash0(s) == hash(s) == hash(PeerId(s)), s
for i in range(2000):
    s = f"node-{i:05d}"
    assert str_hash0(s) == hash(s), s
print("ok")
"""


def _start(code: str, hash_seed: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_run_does_not_depend_on_the_string_hash_seed() -> None:
    procs = {seed: _start(RUN, seed) for seed in ("1", "2")}
    results = {seed: _result(proc) for seed, proc in procs.items()}
    assert results["1"], "no output"
    assert results["1"] == results["2"]


def test_peer_id_hashes_as_str_under_hash_seed_0() -> None:
    # so that runs keep the results they had when bench/simulate.py pinned PYTHONHASHSEED=0
    assert _result(_start(HASHES, "0")).strip() == "ok"
