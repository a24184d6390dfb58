"""``shoal up``: a tracker and a node in one process — one machine, or a first try.

Until the tracker lands this runs the node alone with ``--tracker none``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from peer.config import PeerConfig
from peer.service import serve


async def run_up(
    config: PeerConfig, *, shutdown_trigger: Callable[[], Awaitable[object]] | None = None
) -> None:
    await serve(dataclasses.replace(config, tracker="none"), shutdown_trigger=shutdown_trigger)
