"""``shoal verify``: is what the node serves the same image the origin has?

Checks, in order, each adding a line to the report when it fails:

1. The reference resolves at the origin and at the node.
2. The root digests agree (a tag that moved upstream while the node still serves the old
   digest shows here), and the manifest bytes are identical. When they differ, the
   report says how: which platforms of an index, or the config and layers of a manifest.
3. Through the node: every manifest of the node's tree matches its digest (for an index:
   every platform, or the ones asked for), and every referenced blob arrives with the
   size and sha256 its descriptor promises.

The origin is read directly (``peer.mirror.upstream.Upstream``), never through the node,
so a node that serves something else cannot vouch for itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from peer.errors import PeerError, UpstreamError, UpstreamNotFound
from peer.mirror.upstream import Upstream
from peer.ops.client import NodeClient, node_fetch, origin_fetch
from peer.ops.errors import ServiceUnavailable
from peer.ops.images import ImageRef
from peer.ops.oci import Descriptor, Fetched, Platform, describe_differences, plan_image

#: Blobs verified at once through the node.
BLOB_CONCURRENCY: Final = 4


@dataclass(slots=True)
class VerifyResult:
    """The verdict for one image.

    Attributes:
        image: What was verified.
        digest: The digest the node serves (None if it served nothing).
        upstream_digest: The digest at the origin (None if the origin failed).
        differences: Everything that differs or failed; empty means verified.
        manifests: Manifests checked through the node (root included).
        blobs: Blobs verified through the node.
        size: Bytes of those blobs.
    """

    image: ImageRef
    digest: str | None = None
    upstream_digest: str | None = None
    differences: list[str] = field(default_factory=list)
    manifests: int = 0
    blobs: int = 0
    size: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences and self.digest is not None

    def to_json(self) -> dict[str, object]:
        return {
            "image": str(self.image),
            "verified": self.ok,
            "digest": self.digest,
            "upstream_digest": self.upstream_digest,
            "differences": self.differences,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.size,
        }


async def _origin_root(upstream: Upstream, image: ImageRef, result: VerifyResult) -> Fetched | None:
    try:
        root = await origin_fetch(upstream, image)(image.reference)
    except UpstreamNotFound:
        result.differences.append(f"upstream: {image} does not exist at the origin")
        return None
    except UpstreamError as exc:
        result.differences.append(f"upstream: cannot read {image}: {exc}")
        return None
    result.upstream_digest = root.digest
    return root


async def verify_image(
    node: NodeClient,
    upstream: Upstream,
    image: ImageRef,
    *,
    platforms: Sequence[Platform] | None = None,
) -> VerifyResult:
    """Compare ``image`` as ``node`` serves it with the origin's copy.

    Args:
        node: The node to check.
        upstream: Direct access to the origin registries.
        image: The image.
        platforms: Index entries to check; None (the default) checks every one.

    Raises:
        ServiceUnavailable: The node cannot be reached at all.
    """
    result = VerifyResult(image)
    origin = await _origin_root(upstream, image, result)
    try:
        plan = await plan_image(node_fetch(node, image), image.reference, platforms)
    except ServiceUnavailable:
        raise
    except PeerError as exc:
        result.differences.append(f"node: {exc}")
        return result
    result.digest = plan.root.digest
    result.manifests = 1 + len(plan.manifests)
    if origin is not None and (origin.digest != plan.root.digest or origin.body != plan.root.body):
        what = f"tag {image.tag}" if image.digest is None else "manifest"
        result.differences.append(
            f"{what}: the node serves {plan.root.digest}, upstream has {origin.digest}"
        )
        result.differences.extend(describe_differences(plan.root, origin))
    failures: list[str] = []
    unreachable: list[ServiceUnavailable] = []
    limiter = trio.CapacityLimiter(BLOB_CONCURRENCY)

    async def check(blob: Descriptor) -> None:
        try:
            async with limiter:
                await node.fetch_blob(image, blob)
        except ServiceUnavailable as exc:
            unreachable.append(exc)
        except PeerError as exc:
            where = f" of {blob.platform}" if blob.platform else ""
            failures.append(f"{blob.role}{where}: {exc}")

    async with trio.open_nursery() as nursery:
        for blob in plan.blobs:
            nursery.start_soon(check, blob)
    if unreachable:
        raise unreachable[0]
    result.blobs = len(plan.blobs)
    result.size = plan.total_bytes
    result.differences.extend(sorted(failures))
    return result
