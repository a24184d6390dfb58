"""Run an async context manager on a trio loop of its own, in a background thread.

Sync tests (process clusters, Hypothesis fuzzers) use it to keep an in-process node, a
tracker or a fault proxy serving on a real socket while the test thread blocks on
sockets of its own::

    with in_thread(lambda: running_node(tmp / "n")) as node:
        httpx.get(node.url + "/v2/")

The loop stops when the ``with`` block ends; an exception that ended the loop early
(a crash of the thing under test) is re-raised there, and :meth:`Background.alive` tells
whether it is still running meanwhile.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")


@dataclass
class Background(Generic[T]):
    value: T
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.errors


@contextmanager
def in_thread(
    factory: Callable[[], AbstractAsyncContextManager[T]], *, timeout: float = 30
) -> Iterator[Background[T]]:
    """Enter ``factory()`` on a new trio loop in a thread; yield its value while it runs."""
    started: queue.Queue[tuple[Any, ...]] = queue.Queue()
    errors: list[BaseException] = []

    async def main() -> None:
        stop = trio.Event()
        async with factory() as value:
            started.put(("ok", value, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
            started.put(("error", exc))

    thread = threading.Thread(target=run, name="trio-background", daemon=True)
    thread.start()
    first = started.get(timeout=timeout)
    if first[0] == "error":
        thread.join(timeout)
        raise first[1]
    _, value, token, stop = first
    handle = Background(value, thread, errors)
    try:
        yield handle
    finally:
        if thread.is_alive():
            try:
                trio.from_thread.run_sync(stop.set, trio_token=token)
            except trio.RunFinishedError:
                pass
        thread.join(timeout)
    if errors:
        raise errors[0]
