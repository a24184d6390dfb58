"""Spool a blob body into the cache: hash and write in a worker thread, in batches.

Theory of operation. A cold pull through a node does four things to every byte: receive it
from the origin, hash it, write it to the temp file, and send it to the readers. On the
event loop alone those queue behind each other on one core (``py-spy``: sha256 and the file
writes were a third of the loop's time). Here the loop only receives; a worker thread
(:func:`trio.to_thread.run_sync`) hashes and writes — hashlib and ``os.pwrite`` release the
GIL on large buffers, so that work runs on the other core while the loop keeps receiving
and ``sendfile``-ing to clients.

Batching adapts to load: whatever arrived while the worker was busy goes over in one
batch, so an idle node hands over each chunk at once (low latency) and a busy one hands
over up to :data:`MAX_PENDING` bytes per thread trip (few wake-ups). Receiving pauses
while that much waits, which is the back-pressure on the origin.

Readers (:class:`~peer.mirror.flight.Download`) are woken once per batch, never with bytes
that are not on disk. The last byte is held back until the digest is verified, so a
corrupt body never reaches a client as a complete response: its connection is cut one
byte short. The ``fsync`` of the commit also runs in the worker, off the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import trio

from peer.mirror.cache import BlobWriter
from peer.mirror.flight import Download

# Receive pauses while this much waits for the worker: 8 MiB is about 5 ms of sha256 on
# one core (≈1.5 GB/s with SHA-NI), big enough that a thread trip (tens of µs) is noise,
# and small enough per download for hundreds of concurrent cold pulls.
MAX_PENDING: Final = 8 * 1024 * 1024


class _Batches:
    """The hand-over between the receiving task and the worker: a byte-bounded queue.

    One task waits on each side, and each makes a fresh event right after checking its
    condition, with no checkpoint in between, so no wake-up is lost.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.nbytes = 0
        self.closed = False
        self._data = trio.Event()
        self._room = trio.Event()

    def put(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.nbytes += len(chunk)
        self._data.set()

    def close(self) -> None:
        self.closed = True
        self._data.set()

    def take(self) -> list[bytes]:
        batch, self.chunks, self.nbytes = self.chunks, [], 0
        self._room.set()
        return batch

    async def wait_data(self) -> None:
        """Until there are chunks or the queue is closed."""
        while not self.chunks and not self.closed:
            self._data = trio.Event()
            await self._data.wait()

    async def wait_room(self, limit: int) -> None:
        """Until fewer than ``limit`` bytes wait."""
        while self.nbytes >= limit:
            self._room = trio.Event()
            await self._room.wait()


async def spool(chunks: AsyncIterator[bytes], writer: BlobWriter, download: Download) -> None:
    """Write ``chunks`` through ``writer``, verify, sync; wake ``download``'s readers.

    Leaves the writer verified and synced, ready for :meth:`BlobWriter.commit`. On any
    error the writer is aborted (the caller's cleanup may call ``abort`` again).

    Raises:
        IntegrityError: The bytes overrun the expected size or do not match the digest.
        CacheError: The disk failed.
        Exception: Whatever ``chunks`` raises (the origin failing).
    """
    size = writer.expected_size
    if size is None:
        raise ValueError("spool() needs a writer with an expected size")
    batches = _Batches()
    failure: list[Exception] = []  # the first error of either side (no ExceptionGroup)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_worker, batches, writer, download, size, failure, nursery)
        try:
            async for chunk in chunks:
                if chunk:
                    batches.put(chunk)
                    await batches.wait_room(MAX_PENDING)
        except Exception as exc:  # the origin failed: the worker stops, we report it
            failure.append(exc)
            nursery.cancel_scope.cancel()
        finally:
            batches.close()
    if failure:
        raise failure[0]
    if writer.written == size:
        with writer.abort_on_error("syncing"):
            await trio.to_thread.run_sync(writer.sync_io)


async def _worker(
    batches: _Batches,
    writer: BlobWriter,
    download: Download,
    size: int,
    failure: list[Exception],
    nursery: trio.Nursery,
) -> None:
    try:
        while True:
            await batches.wait_data()
            if not batches.chunks:
                return
            batch = batches.take()
            with writer.abort_on_error("writing"):
                end = await trio.to_thread.run_sync(writer.append_io, batch)
            writer.appended(end)
            if end == size:
                writer.verify()  # before readers get the last byte
            download.advance(end)
    except Exception as exc:  # the disk or the digest failed: stop receiving
        failure.append(exc)
        nursery.cancel_scope.cancel()
