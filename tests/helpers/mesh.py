"""A small mesh for tests: an in-process tracker and several in-process nodes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from peer.mesh.tracker_client import TrackerClient
from tests.helpers.node import Node, running_node
from tracker.config import TrackerConfig
from tracker.protocol import MAX_PIECE_INDEX
from tracker.service import serve as serve_tracker

# The last piece index the tracker takes: past every test blob's pieces (16 GiB at least),
# so origin_gate's lease is never one a node wants.
GATE_PIECE: Final = MAX_PIECE_INDEX


@contextlib.asynccontextmanager
async def running_tracker(**overrides: Any) -> AsyncIterator[str]:
    """A memory-store tracker on a free loopback port (no mDNS); yields its URL.

    ``overrides`` are TrackerConfig fields (``admin_token=...``).
    """
    config = TrackerConfig(listen_host="127.0.0.1", listen_port=0, mdns=False, **overrides)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_tracker(config, task_status=task_status)
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


async def wait_announced(tracker: str, count: int, *, timeout: float = 30) -> None:
    """Wait until the tracker lists ``count`` peers."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                peers = (await client.get(f"{tracker}/admin/peers")).json()
                rows = peers["peers"] if isinstance(peers, dict) else peers
                if len(rows) >= count:
                    return
                await trio.sleep(0.05)


@contextlib.asynccontextmanager
async def mesh_nodes(
    tmp: Path, tracker: str, count: int, **overrides: Any
) -> AsyncIterator[list[Node]]:
    """``count`` nodes on one tracker, each with its own cache; all announced on return."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            kw = dict(overrides)
            upstreams = kw.pop("upstreams_for", None)
            if upstreams is not None:
                kw["upstreams"] = upstreams(i)
            node = await stack.enter_async_context(
                running_node(
                    tmp / f"node{i}",
                    tracker=tracker,
                    node_id=f"node{i}",
                    p2p_listen=("127.0.0.1", 0),
                    **kw,
                )
            )
            nodes.append(node)
        await wait_announced(tracker, count)
        yield nodes


@contextlib.asynccontextmanager
async def origin_gate(tracker: str, digest: str) -> AsyncIterator[None]:
    """Keep every node off the origin for ``digest`` until the block exits.

    The tracker must run with ``max_origin_fetches=1``: a lease held here, of a piece
    index no blob in a test has, fills the cluster's one origin fetch of ``digest``, so
    every lease a node asks for is refused as ``capped`` (the node pauses the origin, at
    most ORIGIN_RETRY_MAX x 1.5 = 6 s, and asks again). A test uses it to make sure a
    node takes pieces from its peers, whatever the timing, then lets it finish from the
    origin.
    """
    async with TrackerClient(tracker, peer_id="origin-gate", session=b"g" * 16) as gate:
        assert (await gate.lease(digest, GATE_PIECE, ttl=120.0)).granted
        try:
            yield
        finally:
            with trio.move_on_after(5, shield=True):
                await gate.lease(digest, GATE_PIECE, ttl=0.0)


async def wait_metric(url: str, name: str, at_least: float, *, timeout: float = 30) -> None:
    """Wait until the node at ``url`` reports ``name`` >= ``at_least`` on /metrics."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                if metric((await client.get(f"{url}/metrics")).text, name) >= at_least:
                    return
                await trio.sleep(0.05)


async def wait_held(tracker: str, digest: str, count: int = 1, *, timeout: float = 30) -> None:
    """Wait until ``count`` peers have announced ``digest`` as complete."""
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                resp = await client.get(f"{tracker}/admin/blobs/{digest}")
                if resp.status_code == 200:
                    body = resp.json()
                    holders = [h for h in body.get("holders", []) if h.get("complete")]
                    if len(holders) >= count:
                        return
                await trio.sleep(0.05)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0.0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
