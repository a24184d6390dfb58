"""``shoal up``: a tracker and a node in one process — one machine, or a first try.

The tracker listens on ``0.0.0.0:5052`` (``SHOAL_TRACKER_LISTEN`` to change) and is
advertised over mDNS, so nodes started elsewhere with ``--tracker auto`` join this one;
the node here talks to it directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable

import trio

from peer.config import PeerConfig
from peer.service import serve
from tracker.config import TrackerConfig, parse_hostport
from tracker.service import serve as serve_tracker


async def run_up(
    config: PeerConfig, *, shutdown_trigger: Callable[[], Awaitable[object]] | None = None
) -> None:
    host, port = parse_hostport(os.environ.get("SHOAL_TRACKER_LISTEN", "0.0.0.0:5052"))
    tracker_config = TrackerConfig(
        listen_host=host, listen_port=port, cluster_secret=config.cluster_secret
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_tracker(
            tracker_config, shutdown_trigger=stop.wait, task_status=task_status))  # fmt: skip
        if config.tracker == "auto":
            config = dataclasses.replace(config, tracker=f"http://127.0.0.1:{bound}")
        try:
            await serve(config, shutdown_trigger=shutdown_trigger)
        finally:
            stop.set()
