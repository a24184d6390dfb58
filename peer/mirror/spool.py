"""Spool a blob body into the cache: read into reused buffers, hash and write per buffer.

Theory of operation. A cold pull through a node does four things to every byte: receive it
from the origin, hash it, write it to the temp file, and send it to the readers. The bytes
go from the socket straight into a few reused 1 MiB buffers (``recv_into``; see
:data:`BUFFERS`); a worker task hashes and ``pwritev``s one whole buffer at a time, while
the next one fills. When the worker is idle each read is handed over at once (low
latency); when it is busy the next buffer fills up first. With every buffer waiting,
receiving pauses: that is the back-pressure on the origin.

The hashing and writing stay on the event loop: a worker *thread* (hashlib and ``pwrite``
release the GIL) was tried and, on the shared 2-core benchmark machine, cost ~0.1 CPU-s
more per 256 MiB than it saved (thread hand-offs, the buffer crossing cores); 4 MiB
buffers cost more still (three passes over a buffer larger than L2). Paired runs of
256 MiB cold pulls, load average 6-9: 1 MiB inline 0.53 CPU-s and 198-307 MB/s per pull,
1 MiB in a thread 0.63 CPU-s, the previous code (httpx, a write per chunk) 0.66-0.72 CPU-s
and 159-217 MB/s. One buffer is about 1 ms of work, so the loop is never held long.

Readers (:class:`~peer.mirror.flight.Download`) are woken once per buffer, never with bytes
that are not on disk. The last byte is held back until the digest is verified, so a
corrupt body never reaches a client as a complete response: its connection is cut one
byte short. The ``fsync`` of the commit runs in a thread, off the event loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from peer.mirror.context import BlobBody
    from peer.mirror.flight import Download
    from peer.mirror.writer import BlobWriter

# Receive buffers per download, allocated once and reused: the loop fills one while the
# worker hashes and writes another; 4 MiB per cold download in flight. Fresh ``bytes``
# per read cost allocation churn; see the module docstring for the buffer size.
BUFFERS: Final = 4
BUFFER_SIZE: Final = 1024 * 1024


class _Pool:
    """Buffers between the receiving task and the worker: free ones, and filled ones in order.

    One task waits on each side, and each makes a fresh event right after checking its
    condition, with no checkpoint in between, so no wake-up is lost.
    """

    def __init__(self, count: int, size: int) -> None:
        self.free = [bytearray(size) for _ in range(count)]
        self.filled: deque[tuple[bytearray, int]] = deque()
        self.closed = False
        self.worker_waiting = False
        self._filled = trio.Event()
        self._freed = trio.Event()

    def put(self, buffer: bytearray, nbytes: int) -> None:
        self.filled.append((buffer, nbytes))
        self._filled.set()

    def close(self) -> None:
        self.closed = True
        self._filled.set()

    def release(self, buffer: bytearray) -> None:
        self.free.append(buffer)
        self._freed.set()

    async def get_free(self) -> bytearray:
        while not self.free:
            self._freed = trio.Event()
            await self._freed.wait()
        return self.free.pop()

    async def get_filled(self) -> tuple[bytearray, int] | None:
        """The oldest filled buffer, or None once closed and drained."""
        while not self.filled and not self.closed:
            self._filled = trio.Event()
            self.worker_waiting = True
            try:
                await self._filled.wait()
            finally:
                self.worker_waiting = False
        return self.filled.popleft() if self.filled else None


async def spool(body: BlobBody, writer: BlobWriter, download: Download) -> None:
    """Write ``body`` through ``writer``, verify, sync; wake ``download``'s readers.

    Leaves the writer verified and synced, ready for :meth:`BlobWriter.commit`. On any
    error the writer is aborted (the caller's cleanup may call ``abort`` again).

    Raises:
        IntegrityError: The bytes overrun the expected size or do not match the digest.
        CacheError: The disk failed.
        Exception: Whatever ``body`` raises (the origin failing).
    """
    size = writer.expected_size
    if size is None:
        raise ValueError("spool() needs a writer with an expected size")
    pool = _Pool(BUFFERS, max(1, min(BUFFER_SIZE, size)))
    failure: list[Exception] = []  # the first error of either side (no ExceptionGroup)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_worker, pool, writer, download, size, failure, nursery)
        try:
            await _receive(body, pool)
        except Exception as exc:  # the origin failed: the worker stops, we report it
            failure.append(exc)
            nursery.cancel_scope.cancel()
        finally:
            pool.close()
    if failure:
        raise failure[0]
    if writer.written == size:
        with writer.abort_on_error("syncing"):
            await trio.to_thread.run_sync(writer.sync_io)


async def _receive(body: BlobBody, pool: _Pool) -> None:
    eof = False
    while not eof:
        buffer = await pool.get_free()
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            n = await body.readinto(view[filled:])
            eof = not n
            filled += n
            if eof or pool.worker_waiting:
                break  # the end, or hand over at once: the worker is idle
        if filled:
            pool.put(buffer, filled)


async def _worker(
    pool: _Pool,
    writer: BlobWriter,
    download: Download,
    size: int,
    failure: list[Exception],
    nursery: trio.Nursery,
) -> None:
    try:
        while (item := await pool.get_filled()) is not None:
            buffer, nbytes = item
            with writer.abort_on_error("writing"):
                end = writer.append_io([memoryview(buffer)[:nbytes]])
            await trio.lowlevel.checkpoint()
            pool.release(buffer)
            writer.appended(end)
            if end == size:
                writer.verify()  # before readers get the last byte
            download.advance(end)
    except Exception as exc:  # the disk or the digest failed: stop receiving
        failure.append(exc)
        nursery.cancel_scope.cancel()
