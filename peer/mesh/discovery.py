"""Find trackers over mDNS (``_shoal-tracker._tcp.local.``) for ``--tracker auto``.

:func:`browse_trackers` yields a channel of :class:`TrackerFound` / :class:`TrackerLost`
events. It keeps browsing for as long as the context is open, so a tracker that restarts
on another address or port shows up as ``TrackerLost(old)`` then ``TrackerFound(new)``,
and the node follows it. Consumers depend only on "a ``trio.abc.ReceiveChannel`` of
events", so tests can hand them a memory channel instead.

Bridge to trio (see ``../shared/STYLE.md``): python-zeroconf runs its own asyncio loop in
a thread and calls the browser's handler on a zeroconf thread. The handler resolves the
service there (a blocking call that must not run on trio's thread) and forwards the event
with ``trio.from_thread.run_sync(send.send_nowait, event, trio_token=token)``; if the
buffer is full the event is dropped and logged rather than blocking zeroconf. Blocking
setup and teardown run through ``trio.to_thread.run_sync``, teardown shielded and
time-boxed. Pass ``interfaces=["127.0.0.1"]`` where multicast only works on loopback
(see ``tracker.discovery``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio
from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

LOGGER = logging.getLogger(__name__)

#: Must match ``tracker.discovery.SERVICE_TYPE`` (the peer may not import the tracker's
#: service modules, only ``tracker.protocol``).
SERVICE_TYPE: Final = "_shoal-tracker._tcp.local."
#: How long the zeroconf thread waits for a service's SRV/A records.
RESOLVE_TIMEOUT_MS: Final = 3000
#: Events buffered for a slow consumer; trackers come and go rarely.
EVENT_BUFFER: Final = 32
#: Seconds allowed to stop browsing and close zeroconf at exit.
CLEANUP_SECONDS: Final = 3.0


@dataclass(frozen=True, slots=True)
class TrackerFound:
    """A tracker is advertised at ``url`` under the DNS-SD instance ``name``."""

    url: str
    name: str


@dataclass(frozen=True, slots=True)
class TrackerLost:
    """The tracker previously found at ``url`` left or moved."""

    url: str
    name: str


TrackerEvent = TrackerFound | TrackerLost


class _Handler:
    """Runs on zeroconf's thread: resolves services and forwards events to trio."""

    def __init__(
        self, send: trio.MemorySendChannel[TrackerEvent], token: trio.lowlevel.TrioToken
    ) -> None:
        self._send = send
        self._token = token
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        url = None
        if state_change is not ServiceStateChange.Removed:
            url = self._resolve(zeroconf, service_type, name)
            if url is None:
                return
        with self._lock:
            old = self._known.pop(name, None)
            if url is not None:
                self._known[name] = url
        if old is not None and old != url:
            self._emit(TrackerLost(old, name))
        if url is not None and old != url:
            self._emit(TrackerFound(url, name))

    @staticmethod
    def _resolve(zeroconf: Zeroconf, service_type: str, name: str) -> str | None:
        info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
        if info is None or not info.port:
            LOGGER.info("mDNS: could not resolve %s", name)
            return None
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not addresses:
            return None
        path = (info.properties.get(b"path") or b"/").decode("ascii", "replace")
        return f"http://{addresses[0]}:{info.port}{path.rstrip('/')}"

    def _emit(self, event: TrackerEvent) -> None:
        try:
            trio.from_thread.run_sync(self._send.send_nowait, event, trio_token=self._token)
        except trio.WouldBlock:
            LOGGER.warning("mDNS: consumer too slow, dropped %s", event)
        except (trio.RunFinishedError, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # we are shutting down


@asynccontextmanager
async def browse_trackers(
    *, interfaces: Sequence[str] = (), buffer: int = EVENT_BUFFER
) -> AsyncIterator[trio.MemoryReceiveChannel[TrackerEvent]]:
    """Browse for trackers while the context is open.

    Args:
        interfaces: IPv4 addresses to browse on (empty: all interfaces).
        buffer: Events buffered before new ones are dropped.

    Yields:
        A channel of :class:`TrackerFound` / :class:`TrackerLost` events.
    """
    send, receive = trio.open_memory_channel[TrackerEvent](buffer)
    handler = _Handler(send, trio.lowlevel.current_trio_token())
    choice = list(interfaces) if interfaces else InterfaceChoice.All
    zc = await trio.to_thread.run_sync(
        functools.partial(Zeroconf, interfaces=choice, ip_version=IPVersion.V4Only)
    )
    browser: ServiceBrowser | None = None
    try:
        browser = await trio.to_thread.run_sync(
            functools.partial(ServiceBrowser, zc, SERVICE_TYPE, handlers=[handler])
        )
        async with receive:
            yield receive
    finally:
        with trio.move_on_after(CLEANUP_SECONDS, shield=True):
            if browser is not None:
                await trio.to_thread.run_sync(browser.cancel, abandon_on_cancel=True)
            await trio.to_thread.run_sync(zc.close, abandon_on_cancel=True)
        await send.aclose()
