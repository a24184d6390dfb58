"""Spool a blob body into the cache: hash and write in a worker thread, in batches.

Theory of operation. A cold pull through a node does four things to every byte: receive it
from the origin, hash it, write it to the temp file, and send it to the readers. On the
event loop alone those queue behind each other on one core (``py-spy``: sha256 and the file
writes were a third of the loop's time). Here the loop only receives; a worker thread
(:func:`trio.to_thread.run_sync`) hashes and writes — hashlib and ``os.pwrite`` release the
GIL on large buffers, so that work runs on the other core while the loop keeps receiving
and ``sendfile``-ing to clients.

Bytes go from the socket straight into a few reusable buffers (``recv_into``; see
:data:`BUFFERS`), and a filled buffer goes to the worker whole. Batching adapts to load:
when the worker is idle, each read is handed over at once (low latency); when it is busy,
the next buffer fills up first (one thread trip per :data:`BUFFER_SIZE`). With every buffer
waiting for the worker, receiving pauses: that is the back-pressure on the origin.

Readers (:class:`~peer.mirror.flight.Download`) are woken once per batch, never with bytes
that are not on disk. The last byte is held back until the digest is verified, so a
corrupt body never reaches a client as a complete response: its connection is cut one
byte short. The ``fsync`` of the commit also runs in the worker, off the event loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from peer.mirror.cache import BlobWriter
    from peer.mirror.context import BlobBody
    from peer.mirror.flight import Download

# Receive buffers per download, allocated once and reused: the loop fills one while the
# worker hashes and writes another. Fresh ``bytes`` per read (and freeing them a batch
# later) cost page faults and, with two threads, TLB shootdowns: in py-spy and in CPU
# seconds per pull that churn cost more than the copies it replaced.
BUFFERS: Final = 3
# One buffer: 4 MiB is ~3 ms of sha256 on one core (≈1.5 GB/s with SHA-NI), so a thread
# trip (tens of µs) is noise; 12 MiB per cold download in flight.
BUFFER_SIZE: Final = 4 * 1024 * 1024


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
                batch = [memoryview(buffer)[:nbytes]]
                end = await trio.to_thread.run_sync(writer.append_io, batch)
            pool.release(buffer)
            writer.appended(end)
            if end == size:
                writer.verify()  # before readers get the last byte
            download.advance(end)
    except Exception as exc:  # the disk or the digest failed: stop receiving
        failure.append(exc)
        nursery.cancel_scope.cancel()
