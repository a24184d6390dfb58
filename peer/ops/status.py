"""``shoal status``: which listed images are not synced, and why.

For every image the origin is asked what the reference means *now* (read directly, with
the ``--upstream`` overrides), and the tree is walked to its blobs for the chosen
platforms. Then:

* **tag moved**: the node still serves another digest for the tag. The node remembers
  tags per ``Accept`` set, so the tag is checked (with a ``HEAD``, which moves no bytes)
  as ``shoal sync`` asks for it and as containerd asks for it. A node whose memory of
  the tag is older than its ``--tag-ttl`` revalidates it during that ``HEAD``, and the tag
  then counts as synced: that is what the next pull would get.
* **blobs missing / in progress**: a blob of the current image that no peer holds whole.
  The tracker (``--tracker``, admin API ``GET /admin/blobs/{digest}``) answers for the
  whole mesh, including downloads in progress and how far they are; ``--data`` answers for
  the node on this machine by looking into its cache directory (read-only).

With ``--tracker``, downloads anywhere in the mesh whose bytes have not moved for
``--stuck-after`` are reported as **stuck** (admin API ``GET /admin/transfers``, which
knows when each download's byte count last changed); the list of images is then optional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import quote

import httpx
import trio

import peer
from peer.errors import PeerError, UpstreamError, UpstreamNotFound
from peer.mirror.upstream import Upstream
from peer.ops.client import NodeClient, mapped, normalise_url, origin_fetch
from peer.ops.errors import ImageDenied, ServiceUnavailable
from peer.ops.images import ImageRef
from peer.ops.oci import ACCEPT, Descriptor, Platform, plan_image

#: The Accept sets a node's tag memory is keyed by, for the clients status checks as.
#: containerd 1.6/1.7 (``remotes/docker/resolver.go``) sends the four types and ``*/*``.
CLIENT_ACCEPTS: Final = {
    "shoal sync": ACCEPT,
    "containerd": (*ACCEPT, "*/*"),
}
#: Images checked at once.
CONCURRENCY: Final = 8


@dataclass(frozen=True, slots=True)
class BlobState:
    """Where one blob stands in one source: ``held``, ``partial`` or ``missing``."""

    state: str
    bytes_held: int = 0
    peers: int = 0


@dataclass(frozen=True, slots=True)
class StuckTransfer:
    """A download in the mesh whose bytes have not changed for ``stalled_for`` seconds."""

    peer_id: str
    digest: str
    size: int
    bytes_held: int
    stalled_for: float

    def describe(self) -> str:
        pct = 100 * self.bytes_held / self.size if self.size else 0.0
        return (
            f"{self.peer_id}: {self.digest} at {pct:.0f}% ({self.bytes_held} of {self.size} "
            f"bytes), no progress for {self.stalled_for:.0f}s"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "peer_id": self.peer_id,
            "digest": self.digest,
            "size": self.size,
            "bytes_held": self.bytes_held,
            "stalled_for": self.stalled_for,
        }


class Holdings(Protocol):
    """A source of truth about which blobs are held."""

    label: str

    async def state(self, blob: Descriptor) -> BlobState: ...


class TrackerHoldings:
    """The mesh, as the tracker's admin API sees it."""

    label = "mesh"

    def __init__(self, url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = normalise_url(url)
        self._client = httpx.AsyncClient(
            base_url=self.url,
            transport=transport,
            timeout=httpx.Timeout(15.0, connect=5.0),
            headers={"User-Agent": f"shoal-ops/{peer.__version__}"},
        )

    async def aclose(self) -> None:
        with trio.move_on_after(2.0, shield=True):
            await self._client.aclose()

    async def ping(self) -> None:
        with mapped("tracker", self.url):
            response = await self._client.get("/healthz")
        if response.status_code != 200:
            raise ServiceUnavailable(f"the tracker at {self.url} answered {response.status_code}")

    async def stuck(self, threshold: float) -> list[StuckTransfer]:
        """Downloads whose bytes have not changed for ``threshold`` seconds or more."""
        params = {"stalled_for": str(math.ceil(threshold))}
        with mapped("tracker", self.url):
            response = await self._client.get("/admin/transfers", params=params)
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"the tracker at {self.url} answered {response.status_code} for its transfers "
                "(a tracker older than this shoal has no /admin/transfers)"
            )
        try:
            return [
                StuckTransfer(
                    str(t["peer_id"]), str(t["digest"]), int(t["size"]), int(t["bytes_held"]),
                    float(t["stalled_for"]),
                )
                for t in json.loads(response.content)["transfers"]
                if t["stalled_for"] is not None and float(t["stalled_for"]) >= threshold
            ]  # fmt: skip
        except (ValueError, LookupError, TypeError) as exc:
            raise ServiceUnavailable(f"the tracker at {self.url} sent bad JSON: {exc}") from None

    async def state(self, blob: Descriptor) -> BlobState:
        with mapped("tracker", self.url):
            response = await self._client.get(f"/admin/blobs/{quote(blob.digest, safe=':')}")
        if response.status_code == 404:
            return BlobState("missing")
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"the tracker at {self.url} answered {response.status_code} for {blob.digest}"
            )
        try:
            holders = json.loads(response.content)["holders"]
            complete = sum(1 for h in holders if h["complete"])
            best = max((int(h["bytes_held"]) for h in holders), default=0)
        except (ValueError, LookupError, TypeError) as exc:
            raise ServiceUnavailable(f"the tracker at {self.url} sent bad JSON: {exc}") from None
        if complete:
            return BlobState("held", blob.size, complete)
        return BlobState("partial" if holders else "missing", best, len(holders))


class CacheHoldings:
    """The node on this machine, from its cache directory (``<data>/cache/blobs/...``)."""

    label = "node"

    def __init__(self, data: Path) -> None:
        self.root = data / "cache" / "blobs"

    async def state(self, blob: Descriptor) -> BlobState:
        algorithm, _, encoded = blob.digest.partition(":")
        path = self.root / algorithm / encoded[:2] / encoded
        try:
            size = path.stat().st_size
        except OSError:
            return BlobState("missing")
        return BlobState("held", size, 1) if size == blob.size else BlobState("missing")


@dataclass(slots=True)
class ImageStatus:
    """What is not synced about one image (nothing, when :attr:`synced`)."""

    image: ImageRef
    upstream_digest: str | None = None
    moved: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    blobs: int = 0
    denied: bool = False
    error: str | None = None

    @property
    def synced(self) -> bool:
        return not (self.moved or self.missing or self.in_progress or self.denied or self.error)

    @property
    def state(self) -> str:
        if self.error:
            return "error"
        if self.denied:
            return "denied"
        parts = [
            name
            for name, items in (
                ("tag moved", self.moved),
                ("blobs missing", self.missing),
                ("in progress", self.in_progress),
            )
            if items
        ]
        return ", ".join(parts) or "synced"

    def details(self) -> list[str]:
        out = [f"tag moved: {m}" for m in self.moved]
        out += [f"missing: {m}" for m in self.missing]
        out += [f"in progress: {m}" for m in self.in_progress]
        out += [self.error] if self.error else []
        out += ["denied by the node's allows.txt"] if self.denied else []
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "image": str(self.image),
            "state": self.state,
            "synced": self.synced,
            "upstream_digest": self.upstream_digest,
            "tag_moved": self.moved,
            "missing": self.missing,
            "in_progress": self.in_progress,
            "blobs": self.blobs,
            "denied": self.denied,
            "error": self.error,
        }


async def _check_tag(node: NodeClient, image: ImageRef, status: ImageStatus, digest: str) -> None:
    for client, accept in CLIENT_ACCEPTS.items():
        served = await node.head_manifest(image, image.reference, accept)
        if served != digest:
            status.moved.append(f"{client} gets {served} from the node, upstream has {digest}")


async def _check_blobs(
    sources: Sequence[Holdings], blobs: Sequence[Descriptor], status: ImageStatus
) -> None:
    for source in sources:
        for blob in blobs:
            where = f"{blob.role} {blob.digest}" + (f" ({blob.platform})" if blob.platform else "")
            state = await source.state(blob)
            if state.state == "missing":
                status.missing.append(f"{where}: not in the {source.label}")
            elif state.state == "partial":
                pct = 100 * state.bytes_held / blob.size if blob.size else 0.0
                status.in_progress.append(
                    f"{where}: {pct:.0f}% on the best of {state.peers} downloading peer(s), "
                    "no whole copy in the mesh"
                )


async def image_status(
    image: ImageRef,
    *,
    upstream: Upstream,
    node: NodeClient | None,
    sources: Sequence[Holdings],
    platforms: Sequence[Platform] | None,
) -> ImageStatus:
    """Check one image (see the module docstring).

    Raises:
        ServiceUnavailable: The node or the tracker cannot be reached.
    """
    status = ImageStatus(image)
    try:
        plan = await plan_image(origin_fetch(upstream, image), image.reference, platforms)
    except UpstreamNotFound:
        status.error = f"{image} does not exist at the origin"
        return status
    except (UpstreamError, PeerError) as exc:
        status.error = f"origin: {exc}"
        return status
    status.upstream_digest = plan.root.digest
    status.blobs = len(plan.blobs)
    try:
        if node is not None and image.digest is None:
            await _check_tag(node, image, status, plan.root.digest)
        await _check_blobs(sources, plan.blobs, status)
    except ImageDenied:
        status.denied = True
    except ServiceUnavailable:
        raise
    except PeerError as exc:
        status.error = str(exc)
    return status


async def mesh_status(
    images: Sequence[ImageRef],
    *,
    upstream: Upstream,
    node: NodeClient | None,
    sources: Sequence[Holdings],
    platforms: Sequence[Platform] | None,
) -> list[ImageStatus]:
    """:func:`image_status` for every image, a few at a time, in list order."""
    results: list[ImageStatus | None] = [None] * len(images)
    unreachable: list[ServiceUnavailable] = []
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(i: int, image: ImageRef) -> None:
        async with limiter:
            try:
                results[i] = await image_status(
                    image, upstream=upstream, node=node, sources=sources, platforms=platforms
                )
            except ServiceUnavailable as exc:
                unreachable.append(exc)

    async with trio.open_nursery() as nursery:
        for i, image in enumerate(images):
            nursery.start_soon(one, i, image)
    if unreachable:
        raise unreachable[0]
    return [r for r in results if r is not None]
