"""A client of one node's registry endpoint, as a runtime sees it (trio + httpx).

Every request names the origin registry with ``?ns=<registry>``, the way containerd talks
to a mirror, so one node serves every registry. Manifests are fetched with the four modern
media types in ``Accept`` and checked against ``Docker-Content-Digest`` and against the
digest asked for; blobs are streamed (never held in memory), hashed as they arrive and
checked for size and digest. httpx exceptions never leave this module: transport failures
become :class:`~peer.ops.errors.ServiceUnavailable` with one sentence naming the node, and
OCI error answers become :class:`~peer.ops.errors.NodeError` subclasses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final
from urllib.parse import quote

import httpx
import trio

import peer
from peer.errors import IntegrityError
from peer.mirror.names import canonical_registry
from peer.mirror.upstream import Upstream
from peer.ops.errors import ImageDenied, ImageNotFound, NodeError, ServiceUnavailable
from peer.ops.images import ImageRef
from peer.ops.oci import ACCEPT, Descriptor, Fetch, Fetched, digest_of

DEFAULT_NODE: Final = "http://127.0.0.1:5050"
#: Seconds to connect; a node on the same machine or LAN answers in milliseconds.
CONNECT_TIMEOUT: Final = 5.0
#: Seconds without a byte before giving up. Above the node's default --origin-timeout
#: (30 s), so a slow origin is reported by the node (503) rather than guessed at here.
READ_TIMEOUT: Final = 60.0
#: Manifests are a few KiB; containerd refuses more than ~4 MiB (resolver.go).
MAX_MANIFEST: Final = 4 * 1048 * 1048
#: Budget for closing connections while being cancelled.
CLOSE_GRACE: Final = 2.0


def normalise_url(url: str) -> str:
    """``127.0.0.1:5050`` → ``http://127.0.0.1:5050``; strips a trailing ``/``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return url


@contextmanager
def mapped(what: str, url: str) -> Iterator[None]:
    """Translate httpx transport failures into one clear :class:`ServiceUnavailable`."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise ServiceUnavailable(f"cannot connect to the {what} at {url} ({exc})") from None
    except httpx.TimeoutException:
        raise ServiceUnavailable(f"the {what} at {url} did not answer in time") from None
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise ServiceUnavailable(
            f"talking to the {what} at {url} failed: {type(exc).__name__}: {exc}"
        ) from None


class NodeClient:
    """Pulls from one node like a runtime does.

    Args:
        url: The node's registry endpoint, e.g. ``http://127.0.0.1:5050``.
        transport: httpx transport override (tests).
    """

    def __init__(
        self, url: str = DEFAULT_NODE, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = normalise_url(url)
        self._client = httpx.AsyncClient(
            base_url=self.url,
            transport=transport,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=None),
            headers={"User-Agent": f"shoal-ops/{peer.__version__}", "Accept-Encoding": "identity"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        with trio.move_on_after(CLOSE_GRACE, shield=True):
            await self._client.aclose()

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """``GET /v2/``: raises ServiceUnavailable or NodeError unless the node answers 200
        (or 401 with shoal's own challenge: a node serving private registries)."""
        with mapped("node", self.url):
            response = await self._client.get("/v2/")
        ours = 'realm="shoal"' in response.headers.get("www-authenticate", "")
        if response.status_code != 200 and not (response.status_code == 401 and ours):
            raise NodeError(
                f"{self.url} answered {response.status_code} to GET /v2/: is it a shoal node?",
                status=response.status_code,
            )

    def _path(self, image: ImageRef, kind: str, reference: str) -> str:
        return f"/v2/{quote(image.repository)}/{kind}/{quote(reference, safe=':')}"

    async def get_manifest(
        self, image: ImageRef, reference: str, accept: Sequence[str] = ACCEPT
    ) -> Fetched:
        """GET a manifest's exact bytes, verified against the digest asked for or announced.

        Raises:
            ImageDenied, ImageNotFound, NodeError: The node answered an error.
            IntegrityError: The bytes do not match a digest.
            ServiceUnavailable: The node cannot be reached.
        """
        path = self._path(image, "manifests", reference)
        with mapped("node", self.url):
            response = await self._client.get(
                path, params={"ns": image.registry}, headers={"Accept": ", ".join(accept)}
            )
        if response.status_code != 200:
            raise self._error(response, image, reference)
        body = response.content
        if len(body) > MAX_MANIFEST:
            raise NodeError(f"{image}: manifest over {MAX_MANIFEST} bytes", status=200)
        announced = response.headers.get("docker-content-digest", "")
        expected = reference if ":" in reference else announced or "sha256:"
        digest = digest_of(body, expected)
        for claimed in (reference if ":" in reference else "", announced):
            if claimed and claimed != digest_of(body, claimed):
                raise IntegrityError(
                    f"{image}: the node's manifest bytes hash to {digest_of(body, claimed)}, "
                    f"not {claimed}"
                )
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        return Fetched(body, digest, media_type)

    async def head_manifest(
        self, image: ImageRef, reference: str, accept: Sequence[str] = ACCEPT
    ) -> str:
        """The digest the node serves for ``reference`` (a HEAD: no manifest bytes move)."""
        path = self._path(image, "manifests", reference)
        with mapped("node", self.url):
            response = await self._client.head(
                path, params={"ns": image.registry}, headers={"Accept": ", ".join(accept)}
            )
        if response.status_code != 200:
            raise self._error(response, image, reference)
        digest = str(response.headers.get("docker-content-digest", ""))
        if not digest:
            raise NodeError(f"{image}: the node sent no Docker-Content-Digest", status=200)
        return digest

    async def fetch_blob(
        self,
        image: ImageRef,
        blob: Descriptor,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream a blob from the node, discarding the bytes but verifying them.

        Args:
            image: The image the blob belongs to (the node routes by its repository).
            blob: The descriptor: the digest and size the bytes must match.
            progress: Called with the length of every chunk as it arrives.

        Returns:
            The number of bytes received.

        Raises:
            IntegrityError: Wrong size or digest.
            NodeError, ServiceUnavailable: As for :meth:`get_manifest`.
        """
        path = self._path(image, "blobs", blob.digest)
        hasher = hashlib.new(blob.digest.partition(":")[0])
        received = 0
        with mapped("node", self.url):
            async with self._client.stream("GET", path, params={"ns": image.registry}) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise self._error(resp, image, blob.digest)
                async for chunk in resp.aiter_raw():
                    received += len(chunk)
                    if received > blob.size:
                        break
                    hasher.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
        got = f"{blob.digest.partition(':')[0]}:{hasher.hexdigest()}"
        if received > blob.size:
            detail = f"more than the {blob.size} bytes the manifest promises"
        elif received < blob.size:
            detail = f"only {received} of {blob.size} bytes"
        elif got != blob.digest:
            detail = f"{received} bytes that hash to {got}"
        else:
            return received
        raise IntegrityError(f"blob {blob.digest} of {image} from the node: {detail}")

    def _error(self, response: httpx.Response, image: ImageRef, reference: str) -> NodeError:
        status = response.status_code
        code, message = "", ""
        try:
            first = json.loads(response.content)["errors"][0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
        except (ValueError, LookupError, TypeError, AttributeError):
            pass
        what = f"{image.name}@{reference}" if ":" in reference else f"{image.name}:{reference}"
        text = f"{what}: node answered {status}" + (f" {code}: {message}" if code else "")
        if status == 403 and code == "DENIED":
            return ImageDenied(
                f"{image.name} is denied by the node's allows.txt", status=403, code=code
            )
        if status == 404:
            return ImageNotFound(text, status=status, code=code)
        return NodeError(text, status=status, code=code)


def parse_upstreams(items: Sequence[str]) -> dict[str, str]:
    """``REGISTRY=URL`` items (as ``shoal peer --upstream`` takes them) → {registry: url}.

    Raises:
        ValueError: An item is not ``REGISTRY=http(s)://URL``.
    """
    out: dict[str, str] = {}
    for item in items:
        for part in str(item).split(","):
            registry, sep, url = part.strip().partition("=")
            if not part.strip():
                continue
            if not sep or not registry or not url.startswith(("http://", "https://")):
                raise ValueError(f"--upstream wants REGISTRY=http(s)://URL, got {part!r}")
            out[canonical_registry(registry.strip())] = url.strip().rstrip("/")
    return out


def origin_fetch(upstream: Upstream, image: ImageRef) -> Fetch:
    """A :data:`~peer.ops.oci.Fetch` reading ``image``'s manifests from its origin."""

    async def fetch(reference: str) -> Fetched:
        manifest = await upstream.get_manifest(
            image.registry, image.repository, reference, list(ACCEPT)
        )
        return Fetched(manifest.body, manifest.digest, manifest.media_type)

    return fetch


def node_fetch(node: NodeClient, image: ImageRef) -> Fetch:
    """A :data:`~peer.ops.oci.Fetch` reading ``image``'s manifests through a node."""

    async def fetch(reference: str) -> Fetched:
        return await node.get_manifest(image, reference)

    return fetch
