"""Tracker discovery: the zeroconf→trio bridge, and a real tracker process found, lost, moved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from zeroconf import ServiceStateChange, Zeroconf

from peer.mesh.discovery import (
    SERVICE_TYPE,
    TrackerEvent,
    TrackerFound,
    TrackerLost,
    _Handler,
    browse_trackers,
)
from tests.helpers import procs

NAME = f"t._{SERVICE_TYPE}"


class FakeZeroconf:
    """Answers get_service_info from a dict: name -> (address, port) or None."""

    def __init__(self) -> None:
        self.services: dict[str, tuple[str, int] | None] = {}

    def get_service_info(self, service_type: str, name: str, timeout: int) -> Any:
        entry = self.services.get(name)
        if entry is None:
            return None
        address, port = entry
        return SimpleNamespace(
            port=port, properties={b"path": b"/"}, parsed_addresses=lambda version: [address]
        )


async def drive(handler: _Handler, zc: FakeZeroconf, change: ServiceStateChange) -> None:
    """Call the handler from a worker thread, as zeroconf does."""
    fake = cast("Zeroconf", zc)  # duck-typed: only get_service_info is used
    await trio.to_thread.run_sync(handler, fake, SERVICE_TYPE, NAME, change)


def drain(receive: trio.MemoryReceiveChannel[TrackerEvent]) -> list[TrackerEvent]:
    events = []
    while True:
        try:
            events.append(receive.receive_nowait())
        except trio.WouldBlock:
            return events


async def test_bridge_found_updated_moved_removed() -> None:
    send, receive = trio.open_memory_channel[TrackerEvent](10)
    handler = _Handler(send, trio.lowlevel.current_trio_token())
    zc = FakeZeroconf()
    zc.services[NAME] = ("10.0.0.1", 5052)
    await drive(handler, zc, ServiceStateChange.Added)
    await drive(handler, zc, ServiceStateChange.Updated)  # same address: nothing new
    zc.services[NAME] = ("10.0.0.2", 6000)
    await drive(handler, zc, ServiceStateChange.Updated)  # the tracker moved
    await drive(handler, zc, ServiceStateChange.Removed)
    await drive(handler, zc, ServiceStateChange.Removed)  # twice: reported once
    assert drain(receive) == [
        TrackerFound("http://10.0.0.1:5052", NAME),
        TrackerLost("http://10.0.0.1:5052", NAME),
        TrackerFound("http://10.0.0.2:6000", NAME),
        TrackerLost("http://10.0.0.2:6000", NAME),
    ]


async def test_bridge_skips_unresolvable_and_drops_when_full() -> None:
    send, receive = trio.open_memory_channel[TrackerEvent](1)
    handler = _Handler(send, trio.lowlevel.current_trio_token())
    zc = FakeZeroconf()
    await drive(handler, zc, ServiceStateChange.Added)  # cannot resolve: no event
    assert drain(receive) == []
    zc.services[NAME] = ("10.0.0.1", 1)
    await drive(handler, zc, ServiceStateChange.Added)
    zc.services[NAME] = ("10.0.0.1", 2)
    with trio.fail_after(5):  # a full buffer must not block zeroconf's thread
        await drive(handler, zc, ServiceStateChange.Updated)
    assert drain(receive) == [TrackerFound("http://10.0.0.1:1", NAME)]


def start_tracker(port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "tracker",
        "--listen",
        f"127.0.0.1:{port}",
        "--mdns-interface",
        "127.0.0.1",
    ]
    env = {**os.environ, "SHOAL_LOG_LEVEL": "warning"}
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


async def next_event_about(
    events: trio.MemoryReceiveChannel[TrackerEvent], url: str, kind: type[TrackerEvent]
) -> TrackerEvent:
    async for event in events:
        if event.url == url and isinstance(event, kind):
            return event
    raise AssertionError("browser stopped")


@pytest.mark.slow
async def test_follows_a_real_tracker_process_that_moves(tmp_path: Path) -> None:
    first, second = procs.free_port(), procs.free_port()
    log = tmp_path / "trackers.log"
    with trio.fail_after(45):
        async with browse_trackers(interfaces=["127.0.0.1"]) as events:
            tracker = start_tracker(first, log)
            try:
                await next_event_about(events, f"http://127.0.0.1:{first}", TrackerFound)
                tracker.terminate()  # SIGTERM: graceful, sends the mDNS goodbye
                await trio.to_thread.run_sync(tracker.wait, 15)
                await next_event_about(events, f"http://127.0.0.1:{first}", TrackerLost)
            finally:
                procs.stop(tracker)
            tracker = start_tracker(second, log)
            try:
                found = await next_event_about(events, f"http://127.0.0.1:{second}", TrackerFound)
                assert found.name.endswith(SERVICE_TYPE)
            finally:
                procs.stop(tracker)
