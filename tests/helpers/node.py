"""Run real shoal nodes for tests: in-process under the test's trio loop, or as a subprocess.

In-process nodes serve on real loopback sockets; blocking helpers (ctr, skopeo, the
registry fixture's sync httpx client) must then run in a thread (``trio.to_thread``) so
the node can answer them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from peer.config import PeerConfig
from peer.service import serve
from tests.helpers import procs


@dataclass
class Node:
    url: str
    host: str
    config: PeerConfig
    p2p_port: int = 0  # the bound P2P port (0 with --tracker none: no mesh)

    def client(self, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, **kw)


@asynccontextmanager
async def running_node(data: Path, **overrides: Any) -> AsyncIterator[Node]:
    """A node on a free loopback port, with ``--tracker none`` unless overridden."""
    config = PeerConfig(
        listen=("127.0.0.1", 0),
        p2p_listen=("127.0.0.1", 0),
        data=data,
        tracker="none",
        cache_size=overrides.pop("cache_size", 1024**3),
    )
    config = dataclasses.replace(config, **overrides)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, config)
        host = f"127.0.0.1:{bound.http_port}"
        try:
            yield Node(url=f"http://{host}", host=host, config=config, p2p_port=bound.p2p_port)
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class NodeProcess:
    url: str
    host: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def spawn_node(data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[NodeProcess]:
    """``shoal peer`` as a real subprocess (the console script's code path)."""
    port = procs.free_port()
    log = data.parent / f"{data.name}.log"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "peer", "peer", "--listen", f"127.0.0.1:{port}",
           "--data", str(data), "--tracker", "none", *args]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True,
        )  # fmt: skip
    host = f"127.0.0.1:{port}"

    try:
        procs.wait_for(
            procs.http_ok(f"http://{host}/healthz"),
            timeout=20,
            what="shoal peer",
            proc=proc,
            log_path=log,
        )
        yield NodeProcess(url=f"http://{host}", host=host, proc=proc, log=log)
    finally:
        procs.stop(proc)
