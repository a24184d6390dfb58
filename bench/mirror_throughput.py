"""Single-node throughput: cache hits vs nginx and docker-registry, cold pulls vs direct.

Run: ``.venv/bin/python -m bench.mirror_throughput [--size-mib 512] [--runs 5]``

One process run, on loopback, side by side:
  * nginx (sendfile on) serving the blob file from disk;
  * docker-registry serving the same blob (``GET /v2/<name>/blobs/<digest>``);
  * a ``shoal peer`` subprocess serving it from its cache (warm);
  * a fresh ``shoal peer`` per run fetching it from docker-registry while streaming (cold),
    against curl fetching straight from docker-registry;
  * the same with a tracker (``--tracker``): the mesh path, origin leases, piece hashes
    recorded at the tracker, as every node of a cluster pulls.
Each transfer is one ``curl -o /dev/null`` (a C client, so the client is not the limit).
The median of ``--runs`` runs is reported, with ratios to the references.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx

from bench import nginx as nginx_ref
from bench.e2e_containerd import tracker
from bench.report import median, write_section
from tests.helpers import procs
from tests.helpers.node import spawn_node
from tests.helpers.registry import Registry

NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}"""


def curl(url: str) -> tuple[float, float, int]:
    """(bytes/s, time to first byte in s, size) of one GET."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{time_starttransfer} %{size_download} %{http_code}", url],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout.split()  # fmt: skip
    if out[3] != "200":
        raise RuntimeError(f"{url} answered {out[3]}")
    return float(out[0]), float(out[1]), int(out[2])


def wait_announced(tracker_url: str, node_id: str) -> None:
    def known() -> bool | None:
        peers = httpx.get(f"{tracker_url}/admin/peers", timeout=2).json()
        return True if node_id in json.dumps(peers) else None

    procs.wait_for(known, what="the node's first announce", timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    root.chmod(0o755)  # nginx workers run as an unprivileged user
    try:
        data = os.urandom(size)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (root / "www").mkdir()
        (root / "www" / "blob").write_bytes(data)
        port = procs.free_port()
        nginx = nginx_ref.start(root, NGINX_SERVER.format(root=root, port=port))
        with Registry(root / "registry") as reg:
            name = "bench/blob"
            reg.push_blob(name, data)
            del data
            nginx_url = f"http://127.0.0.1:{port}/blob"
            reg_url = f"{reg.url}/v2/{name}/blobs/{digest}"
            procs.wait_for(
                lambda: True if curl(nginx_url)[2] == size else None, what="nginx", timeout=10
            )
            rows: dict[str, list[tuple[float, float]]] = {
                k: [] for k in ("nginx", "registry", "warm", "cold", "direct", "mesh")
            }
            with spawn_node(
                root / "warm", "--upstream", f"docker.io={reg.url}", "--cache-size", "8GiB"
            ) as node:
                node_url = f"{node.url}/v2/{name}/blobs/{digest}?ns=docker.io"
                curl(node_url)  # fill the cache
                for _ in range(args.runs):
                    for key, url in (
                        ("nginx", nginx_url),
                        ("registry", reg_url),
                        ("warm", node_url),
                    ):
                        speed, ttfb, got = curl(url)
                        assert got == size
                        rows[key].append((speed, ttfb))
            with tracker(root) as tracker_url:
                for i in range(args.runs):
                    speed, ttfb, _ = curl(reg_url)
                    rows["direct"].append((speed, ttfb))
                    mesh = ("--tracker", tracker_url, "--node-id", f"mesh{i}",
                            "--p2p-listen", f"127.0.0.1:{procs.free_port()}")  # fmt: skip
                    for key, extra in (("cold", ()), ("mesh", mesh)):
                        with spawn_node(
                            root / f"{key}{i}", "--upstream", f"docker.io={reg.url}",
                            "--cache-size", "8GiB", *extra,
                        ) as node:  # fmt: skip
                            if key == "mesh":  # its first announce is in: the mesh path
                                wait_announced(tracker_url, f"mesh{i}")
                            url = f"{node.url}/v2/{name}/blobs/{digest}?ns=docker.io"
                            speed, ttfb, got = curl(url)
                            assert got == size
                            rows[key].append((speed, ttfb))
        procs.stop(nginx)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def mbs(key: str) -> float:
        return median([s for s, _ in rows[key]]) / 1e6

    def ttfb(key: str) -> float:
        return median([t for _, t in rows[key]]) * 1000

    table = [
        "| transfer | median MB/s | median TTFB ms | ratio |",
        "| --- | ---: | ---: | --- |",
        f"| nginx sendfile (reference) | {mbs('nginx'):.0f} | {ttfb('nginx'):.1f} | 1.00 |",
        f"| docker-registry (reference) | {mbs('registry'):.0f} | {ttfb('registry'):.1f} | {mbs('registry') / mbs('nginx'):.2f}× nginx |",
        f"| **shoal cache hit** | {mbs('warm'):.0f} | {ttfb('warm'):.1f} | **{mbs('warm') / mbs('registry'):.2f}× docker-registry**, {mbs('warm') / mbs('nginx'):.2f}× nginx |",
        f"| docker-registry direct (cold reference) | {mbs('direct'):.0f} | {ttfb('direct'):.1f} | 1.00 |",
        f"| **shoal cold (through node, streaming)** | {mbs('cold'):.0f} | {ttfb('cold'):.1f} | **{mbs('cold') / mbs('direct'):.2f}× direct** |",
        f"| **shoal cold, node with a tracker (mesh path)** | {mbs('mesh'):.0f} | {ttfb('mesh'):.1f} | **{mbs('mesh') / mbs('direct'):.2f}× direct** |",
    ]
    body = (
        f"One {args.size_mib} MiB random blob, {args.runs} runs each, `curl -o /dev/null` on loopback. "
        "Targets (issue 2): cache hit ≥ 1.0× docker-registry (aim: nginx), cold ≥ 0.9× direct.\n\n"
        + "\n".join(table)
    )
    print(body)
    if not args.no_write:
        write_section(
            "mirror-throughput", "Single node: cache hits and cold pulls",
            f".venv/bin/python -m bench.mirror_throughput --size-mib {args.size_mib} --runs {args.runs}",
            body,
        )  # fmt: skip


if __name__ == "__main__":
    main()
