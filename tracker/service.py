"""Run the tracker: the HTTP app under hypercorn, the expiry sweeper and the mDNS advert.

Start-up order matters and is enforced with ``nursery.start``: the HTTP socket is
listening before the mDNS advert goes out, and ``task_status.started(port)`` is called
only when both are up. Shutdown runs the other way: stop advertising (goodbye packets),
stop the sweeper, let hypercorn finish in-flight requests for up to ``GRACE_SECONDS``,
then close the store, shielded and time-boxed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from tracker import discovery
from tracker.app import TrackerApp
from tracker.auth import ClusterKeys
from tracker.config import TrackerConfig
from tracker.errors import StoreUnavailable
from tracker.model import Policy
from tracker.store import Store, open_store

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

LOGGER = logging.getLogger(__name__)

#: In-flight requests get this long to finish at shutdown (they take milliseconds).
GRACE_SECONDS: Final = 5.0
#: Closing the store (Redis connection pool) must not hold shutdown up for longer.
CLOSE_SECONDS: Final = 2.0
#: Sweep often enough that the admin view is at most this stale, and at least every
#: quarter of a TTL so expired peers never linger long.
MAX_SWEEP_PERIOD: Final = 15.0


def hypercorn_config(config: TrackerConfig) -> HypercornConfig:
    """Hypercorn settings for the tracker: one bind, no access log, short grace."""
    hc = HypercornConfig()
    host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
    hc.bind = [f"{host}:{config.listen_port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # our handlers, not its own
    hc.graceful_timeout = GRACE_SECONDS
    hc.keep_alive_timeout = 75.0  # peers reuse one connection across announces
    hc.keep_alive_max_requests = 10_000  # recycle connections now and then, not every 1,000
    return hc


async def sweep_forever(store: Store, clock: Callable[[], float], period: float) -> None:
    """Remove expired peers, leases and bans every ``period`` seconds."""
    while True:
        await trio.sleep(period)
        try:
            expired = await store.sweep(clock())
        except StoreUnavailable as exc:
            LOGGER.warning("sweep skipped: %s", exc)
            continue
        if expired:
            LOGGER.info("expired %d peers", expired)


async def sample_forever(store: Store, clock: Callable[[], float], interval: float) -> None:
    """Store a point of the cluster's origin and peer byte counters every ``interval``.

    The store refuses a point younger than half an interval, so replicas sharing a Redis
    store do not double the points, while a timer waking a little early still samples.
    """
    while True:
        try:
            await store.sample_traffic(clock(), interval=interval / 2)
        except StoreUnavailable as exc:
            LOGGER.warning("traffic sample skipped: %s", exc)
        await trio.sleep(interval)


async def serve(
    config: TrackerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Serve the tracker until ``shutdown_trigger`` returns (forever by default).

    Args:
        config: Settings.
        shutdown_trigger: Awaited; when it returns the tracker shuts down gracefully.
        task_status: Started with the bound TCP port (useful with port 0).
        store: Use this store instead of opening ``config.store`` (tests, ``shoal up``).
        clock: Wall clock in Unix seconds.
    """
    policy = Policy(
        announce_interval=config.announce_interval,
        peer_ttl=config.peer_ttl,
        max_origin_fetches=config.max_origin_fetches,
    )
    store = store if store is not None else open_store(config.store, policy)
    keys = ClusterKeys.parse(config.cluster_secret) if config.cluster_secret else None
    app = TrackerApp(store, admin_token=config.admin_token, clock=clock, cluster_keys=keys)
    if keys is None:
        LOGGER.warning("no --cluster-secret: any host that reaches this tracker may use /v1")
    stopping = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    hypercorn_serve,
                    cast("ASGIFramework", app),
                    hypercorn_config(config),
                    shutdown_trigger=stopping.wait,
                    mode="asgi",
                )
            )
            port = int(binds[0].rsplit(":", 1)[1])
            LOGGER.info("tracker listening on %s (store: %s)", binds[0], store.kind)
            async with trio.open_nursery() as background:
                period = min(MAX_SWEEP_PERIOD, config.peer_ttl / 4)
                background.start_soon(sweep_forever, store, clock, period)
                background.start_soon(sample_forever, store, clock, config.traffic_interval)
                if config.mdns:
                    await background.start(
                        functools.partial(
                            discovery.advertise,
                            port,
                            listen_host=config.listen_host,
                            interfaces=config.mdns_interfaces,
                        )
                    )
                task_status.started(port)
                await (shutdown_trigger or trio.sleep_forever)()
                background.cancel_scope.cancel()
            stopping.set()
    finally:
        with trio.move_on_after(CLOSE_SECONDS, shield=True):
            await store.aclose()
        LOGGER.info("tracker stopped")
