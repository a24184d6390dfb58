"""``shoal sync``: preheat a list of images into the mesh through one node.

For every image: resolve the tag through the node, walk an index to the chosen platforms'
manifests, then download every blob through the node (which caches it, shares it with the
mesh, and fetches it from peers or the origin as it sees fit). Bytes are verified as they
arrive and discarded: the point is to make the node hold them.

Concurrency: at most ``concurrency`` images are being resolved and at most
``concurrency`` blobs are downloading at any moment. A blob shared by several images (a
common base layer) is downloaded once; the other images wait for that download and share
its outcome. One image's failure never stops the others; a denied image (not in the node's
allows.txt) is reported and counted apart from failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from peer.errors import PeerError
from peer.ops.client import NodeClient, node_fetch
from peer.ops.errors import ImageDenied
from peer.ops.images import ImageRef
from peer.ops.oci import Descriptor, Platform, plan_image

State = Literal["synced", "denied", "failed"]


@dataclass(slots=True)
class ImageResult:
    """The outcome for one image.

    Attributes:
        image: The image as listed.
        state: ``synced``, ``denied`` (allows.txt) or ``failed``.
        digest: The digest the tag resolved to, when it resolved.
        manifests: Platform manifests fetched (0 for a single-manifest image).
        blobs: Distinct blobs of the image.
        size: Their total size in bytes.
        received: Bytes this run downloaded for it (blobs shared with an image synced
            earlier in the same run count once, for that image).
        seconds: Wall time spent on it.
        error: What went wrong, for denied and failed images.
    """

    image: ImageRef
    state: State = "failed"
    digest: str | None = None
    manifests: int = 0
    blobs: int = 0
    size: int = 0
    received: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "image": str(self.image),
            "state": self.state,
            "digest": self.digest,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.size,
            "received": self.received,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


class SyncReporter(Protocol):
    """Receives progress; the CLI has a rich, a plain-text and a JSON implementation."""

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        """The image resolved: ``total`` bytes in ``blobs`` blobs are to come."""

    def advance(self, image: ImageRef, nbytes: int) -> None:
        """``nbytes`` more of the image's blobs are done."""

    def finished(self, result: ImageResult) -> None:
        """The image is done, one way or another."""


class NullReporter:
    """Reports nothing (library use, tests)."""

    def planned(self, image: ImageRef, total: int, blobs: int) -> None:
        pass

    def advance(self, image: ImageRef, nbytes: int) -> None:
        pass

    def finished(self, result: ImageResult) -> None:
        pass


@dataclass(slots=True)
class _Shared:
    """One blob download that several images may wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class _Syncer:
    def __init__(
        self,
        node: NodeClient,
        platforms: Sequence[Platform] | None,
        concurrency: int,
        reporter: SyncReporter,
    ) -> None:
        self.node = node
        self.platforms = platforms
        self.reporter = reporter
        self.image_slots = trio.CapacityLimiter(concurrency)
        self.blob_slots = trio.CapacityLimiter(concurrency)
        self.blobs: dict[str, _Shared] = {}

    async def image(self, image: ImageRef, result: ImageResult) -> None:
        start = trio.current_time()
        try:
            async with self.image_slots:
                fetch = node_fetch(self.node, image)
                plan = await plan_image(fetch, image.reference, self.platforms)
            result.digest = plan.root.digest
            result.manifests = len(plan.manifests)
            result.blobs = len(plan.blobs)
            result.size = plan.total_bytes
            self.reporter.planned(image, plan.total_bytes, len(plan.blobs))
            errors: list[str] = []
            async with trio.open_nursery() as nursery:
                for blob in plan.blobs:
                    nursery.start_soon(self.blob, image, blob, result, errors)
            if errors:
                more = f" (and {len(errors) - 1} more blob errors)" if len(errors) > 1 else ""
                raise _BlobFailed(errors[0] + more)
            result.state = "synced"
        except ImageDenied as exc:
            result.state, result.error = "denied", str(exc)
        except PeerError as exc:
            result.state, result.error = "failed", str(exc)
        finally:
            result.seconds = trio.current_time() - start
            self.reporter.finished(result)

    async def blob(
        self, image: ImageRef, blob: Descriptor, result: ImageResult, errors: list[str]
    ) -> None:
        shared = self.blobs.get(blob.digest)
        if shared is not None:  # another image is fetching (or fetched) it
            await shared.done.wait()
            if shared.error is not None:
                errors.append(shared.error)
            else:
                self.reporter.advance(image, blob.size)
            return
        shared = self.blobs[blob.digest] = _Shared()
        received = 0

        def progress(n: int) -> None:
            nonlocal received
            received += n
            result.received += n
            self.reporter.advance(image, n)

        try:
            async with self.blob_slots:
                await self.node.fetch_blob(image, blob, progress)
        except PeerError as exc:
            shared.error = str(exc)
            errors.append(shared.error)
            self.reporter.advance(image, -received)  # the bar shows verified bytes only
        finally:
            shared.done.set()


class _BlobFailed(PeerError):
    """Internal: some blob of an image failed (the message is the first error)."""


async def sync_images(
    node: NodeClient,
    images: Sequence[ImageRef],
    *,
    platforms: Sequence[Platform] | None,
    concurrency: int = 4,
    reporter: SyncReporter | None = None,
) -> list[ImageResult]:
    """Preheat ``images`` through ``node``.

    Args:
        node: The node to pull through.
        images: The images, in list order.
        platforms: Platforms to take from indexes; None takes every entry.
        concurrency: Images resolving at once, and blobs downloading at once.
        reporter: Progress sink.

    Returns:
        One result per image, in the order given.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    syncer = _Syncer(node, platforms, concurrency, reporter or NullReporter())
    results = [ImageResult(image) for image in images]
    async with trio.open_nursery() as nursery:
        for image, result in zip(images, results, strict=True):
            nursery.start_soon(syncer.image, image, result)
    return results
