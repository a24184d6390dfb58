"""The upstream ("origin") registry client: a thin trio/httpx shell over :mod:`peer.mirror.auth`.

Theory of operation (reference: shared/reference/oci-pull-protocol.md §3.5, §4 E12–E20, §5.4):

* Every call goes through :meth:`Upstream._request`, one loop that sends a request, follows
  redirects by hand and answers auth challenges. Redirects (301/302/303/307/308, at most
  ``MAX_REDIRECTS`` hops) keep the method (presigned blob-store URLs are method-specific,
  E12) and are never cached (they expire).
* Credentials are per *origin* (``scheme://host:port``), never per request (E13, E14): see
  :mod:`peer.mirror.authorizer`. A ``401`` makes us take the new challenge, mint a fresh
  token and retry, once per origin per call.
* Status mapping: 404 → :class:`UpstreamNotFound`; Docker Hub's 401 after an anonymous token
  → :class:`UpstreamNotFound` (Hub's answer for unknown *and* private repositories, §3.5);
  other 401/403 → :class:`UpstreamDenied`; 429 → :class:`UpstreamRateLimited`; 5xx and
  transport failures → :class:`UpstreamUnavailable`; anything else →
  :class:`UpstreamProtocolError`. httpx exceptions never leave this module.
* Bytes: ``Accept-Encoding: identity`` everywhere and blob bodies read with ``iter_raw`` (E17).
  Unwanted bodies (redirects, errors) are read to the end when short, so the pooled
  connection is reused, and cut off when long (a dropped connection is cheaper).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import httpx
import trio

import peer
from peer.errors import IntegrityError, UpstreamProtocolError
from peer.mirror.answers import (
    CLOSE_GRACE,
    BlobResponse,
    aclose,
    drain,
    error_for,
    int_header,
    mapped,
    media_type_of,
    read_capped,
    redact,
)
from peer.mirror.authorizer import Authorizer
from peer.mirror.blobhttp import LeanTransport
from peer.mirror.names import DIGEST_RE, VERIFIABLE
from peer.mirror.names import DOCKER_HUB as DOCKER_HUB
from peer.mirror.names import canonical_registry as canonical_registry

LOGGER = logging.getLogger(__name__)

# httpcore reads a response 64 KiB at a time (``READ_NUM_BYTES``, a class constant). Blob
# bodies are hundreds of MiB, and every read costs a trip through httpcore, h11 and trio:
# at 64 KiB that per-read overhead capped a cold pull near 250 MB/s on our 2-core
# machines; at 1 MiB the kernel hands over whatever has arrived, up to 1 MiB, and the
# same client reads 600+ MB/s (bench/mirror_throughput.py). Memory cost: at most 1 MiB
# per concurrent upstream body.
UPSTREAM_READ_SIZE: Final = 1024 * 1024
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = UPSTREAM_READ_SIZE

#: Go's net/http limit, which containerd inherits (reference §3.1).
MAX_REDIRECTS: Final = 10
#: containerd's ``MaxManifestSize`` (``resolver.go``: 4*1048*1048, a little over 4 MiB). The
#: spec says registries SHOULD take manifests of at least 4 MB, real ones are a few KiB, and
#: a runtime refuses anything bigger, so this bounds memory without refusing usable content.
MAX_MANIFEST_SIZE: Final = 4 * 1048 * 1048
#: Sent when a caller gives no Accept list: never let that become a schema1 fetch (§1.5).
DEFAULT_MANIFEST_ACCEPT: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def default_upstream_url(registry: str) -> str:
    """The base URL for a registry: Docker Hub's API host, else ``https://<registry>``."""
    name = canonical_registry(registry)
    return "https://registry-1.docker.io" if name == DOCKER_HUB else f"https://{name}"


@dataclass(frozen=True, slots=True)
class ManifestMeta:
    """What a manifest HEAD tells us."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest's exact bytes, their digest and the upstream ``Content-Type``."""

    body: bytes
    digest: str
    media_type: str


class Upstream:
    """Client for origin registries: manifests and blobs, with auth and redirects.

    Args:
        registries: Registry name → base URL overrides; other registries use
            :func:`default_upstream_url`.
        credentials: Registry name → (user, password), used for Basic challenges and token
            requests, and only sent inside the registry's registrable domain.
        connect_timeout: Seconds to connect. Waiting for a pooled connection is unbounded:
            put deadlines at call sites.
        read_timeout: Seconds between bytes.
        max_connections: Connection pool size (keep-alive included).
        transport: httpx transport override (tests).
    """

    def __init__(
        self,
        registries: Mapping[str, str] | None = None,
        *,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._urls = {canonical_registry(k): v.rstrip("/") for k, v in (registries or {}).items()}
        self._credentials = {canonical_registry(k): v for k, v in (credentials or {}).items()}
        options: dict[str, Any] = {
            "timeout": httpx.Timeout(read_timeout, connect=connect_timeout, pool=None),
            "headers": {"User-Agent": f"shoal/{peer.__version__}", "Accept-Encoding": "identity"},
            "follow_redirects": False,
        }
        self._client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            **options,
        )
        # Blob bodies (GET, every hop of its redirects) go through the lean transport; a
        # transport given for tests carries everything.
        self._blob_client = (
            self._client
            if transport is not None
            else httpx.AsyncClient(transport=LeanTransport(), **options)
        )
        self._auth = Authorizer(self._client)
        #: Registry → last ``ratelimit-remaining`` value (e.g. ``"76;w=21600"``), for metrics.
        self.last_ratelimit: dict[str, str] = {}

    def url_for(self, registry: str) -> str:
        """Base URL (no trailing slash) used for ``registry``."""
        name = canonical_registry(registry)
        return self._urls.get(name) or default_upstream_url(name)

    async def aclose(self) -> None:
        """Close pooled connections."""
        with trio.move_on_after(CLOSE_GRACE, shield=True):
            await self._client.aclose()
            await self._blob_client.aclose()

    async def head_manifest(
        self, registry: str, repo: str, ref: str, accept: Sequence[str]
    ) -> ManifestMeta:
        """HEAD a manifest; falls back to GET when the HEAD lacks digest, length or type."""
        registry, repo = _names(registry, repo)
        _algorithm(ref)
        try:
            response = await self._request("HEAD", registry, repo, f"manifests/{ref}", accept)
        except UpstreamProtocolError as exc:
            if exc.status != 405:
                raise
        else:
            await drain(response)
            digest = response.headers.get("docker-content-digest", "")
            size = int_header(response, "content-length")
            media_type = media_type_of(response)
            usable = DIGEST_RE.fullmatch(digest) is not None and (
                digest == ref or DIGEST_RE.fullmatch(ref) is None
            )
            if usable and size and media_type:
                return ManifestMeta(digest, media_type, size)
        manifest = await self.get_manifest(registry, repo, ref, accept)
        return ManifestMeta(manifest.digest, manifest.media_type, len(manifest.body))

    async def get_manifest(
        self, registry: str, repo: str, ref: str, accept: Sequence[str]
    ) -> Manifest:
        """GET a manifest's exact bytes, verified against ``ref`` when it is a digest.

        Raises:
            IntegrityError: The bytes do not match the digest asked for or announced.
            UpstreamProtocolError: Over ``MAX_MANIFEST_SIZE``, or no ``Content-Type``.
        """
        registry, repo = _names(registry, repo)
        algorithm = _algorithm(ref)
        response = await self._request("GET", registry, repo, f"manifests/{ref}", accept)
        what = redact(response.request.url)
        try:
            if (int_header(response, "content-length") or 0) > MAX_MANIFEST_SIZE:
                raise UpstreamProtocolError(f"{what}: manifest over {MAX_MANIFEST_SIZE} bytes")
            # Decoded bytes: a manifest's digest covers its representation, not a transfer
            # Content-Encoding (which we ask the origin not to use anyway).
            body = await read_capped(response, MAX_MANIFEST_SIZE, what)
        finally:
            await aclose(response)
        digest = ref if algorithm else "sha256:" + hashlib.sha256(body).hexdigest()
        for claimed in (digest, response.headers.get("docker-content-digest", "")):
            alg, _, hexdigest = claimed.partition(":")
            if alg in VERIFIABLE and hashlib.new(alg, body).hexdigest() != hexdigest:
                raise IntegrityError(f"{what}: body does not match {claimed}")
        if not (media_type := media_type_of(response)):
            raise UpstreamProtocolError(f"{what}: no Content-Type")
        return Manifest(body, digest, media_type)

    async def head_blob(self, registry: str, repo: str, digest: str) -> int:
        """HEAD a blob and return its size."""
        registry, repo = _names(registry, repo)
        response = await self._request("HEAD", registry, repo, f"blobs/{digest}", None, lean=True)
        await drain(response)
        size = int_header(response, "content-length")
        if size is None:
            raise UpstreamProtocolError(f"{redact(response.request.url)}: no Content-Length")
        return size

    async def check_access(
        self,
        registry: str,
        repo: str,
        kind: str,
        ref: str,
        credentials: tuple[str, str],
        accept: Sequence[str] = (),
    ) -> None:
        """Ask the origin whether *a client's* ``credentials`` may read ``<kind>/<ref>``.

        A ``HEAD`` of the manifest or blob (``GET``, body unread, where HEAD is refused)
        with the client's credentials instead of the node's: the answer only decides whether
        :mod:`peer.mirror.access` serves that client; nothing is fetched or cached here.

        Raises:
            UpstreamDenied: The origin refused those credentials (401/403).
            UpstreamNotFound: Not there, or not visible to them.
            UpstreamError: Any other failure (the caller must refuse, not guess).
        """
        registry, repo = _names(registry, repo)
        path, wanted = f"{kind}/{ref}", (list(accept) if kind == "manifests" else None)
        try:
            response = await self._request(
                "HEAD", registry, repo, path, wanted, as_client=credentials
            )
        except UpstreamProtocolError as exc:
            if exc.status != 405:
                raise
            response = await self._request(
                "GET", registry, repo, path, wanted, as_client=credentials
            )
        await aclose(response)

    def open_blob(
        self, registry: str, repo: str, digest: str, *, start: int = 0, end: int | None = None
    ) -> AbstractAsyncContextManager[BlobResponse]:
        """Open a blob body, optionally the byte range ``start``–``end`` (inclusive).

        A ``200`` to a range request is accepted and reported as ``start=0``: the caller
        skips. The body is closed when the context exits.
        """
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        return self._open_blob(registry, repo, digest, start, end)

    @asynccontextmanager
    async def _open_blob(
        self, registry: str, repo: str, digest: str, start: int, end: int | None
    ) -> AsyncIterator[BlobResponse]:
        registry, repo = _names(registry, repo)
        ranged = start > 0 or end is not None
        headers = {"Range": f"bytes={start}-{'' if end is None else end}"} if ranged else {}
        response = await self._request(
            "GET", registry, repo, f"blobs/{digest}", None, headers, lean=True
        )
        blob: BlobResponse | None = None
        try:
            what = redact(response.request.url)
            length = int_header(response, "content-length")
            if response.status_code == 206 and ranged:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
                first, last, size = map(int, match.groups()) if match else (-1, -1, -1)
                if first != start or not first <= last < size or (end is not None and last > end):
                    raise UpstreamProtocolError(f"{what}: bad Content-Range for {headers}")
                blob = BlobResponse(response, size=size, start=first, length=last - first + 1)
            elif response.status_code == 200:
                size = (
                    length if length is not None else await self.head_blob(registry, repo, digest)
                )
                blob = BlobResponse(response, size=size, start=0, length=size)
            else:
                raise UpstreamProtocolError(f"{what}: unexpected {response.status_code}")
            if length is not None and length != blob.length:
                raise UpstreamProtocolError(f"{what}: Content-Length {length} != {blob.length}")
            yield blob
        finally:
            if blob is not None:
                blob._usable = False
                await blob.aclose()
            await aclose(response)

    async def _request(
        self,
        method: str,
        registry: str,
        repo: str,
        path: str,
        accept: Sequence[str] | None,
        headers: Mapping[str, str] | None = None,
        *,
        as_client: tuple[str, str] | None = None,
        lean: bool = False,
    ) -> httpx.Response:
        """Send ``method`` to ``/v2/<repo>/<path>``; return the open 2xx response.

        Follows redirects and answers challenges (see the module docstring); every other
        outcome is raised as an :class:`UpstreamError`. ``as_client``: a client's
        credentials to use instead of the node's (access checks only). ``lean``: send
        through :class:`~peer.mirror.blobhttp.LeanTransport` (blob bodies).
        """
        client = self._blob_client if lean else self._client
        base = self.url_for(registry)
        url = f"{base}/v2/{quote(repo, safe='/')}/{quote(path, safe='/:')}"
        send_headers = dict(headers or {})
        if accept is not None:
            # The client's Accept goes upstream as sent, as far as a header can carry it:
            # h11 lets latin-1 bytes in, httpx refuses to send them (UnicodeEncodeError).
            usable = [line for line in accept if line.isascii() and line.isprintable()]
            send_headers["Accept"] = ", ".join(usable or DEFAULT_MANIFEST_ACCEPT)
        creds = as_client or self._credentials.get(registry)
        scopes: dict[str, tuple[str, ...]] = {}  # origin -> scopes its 401 challenge named
        redirects = 0
        while True:  # ends: each origin gets one auth retry, and redirects are bounded
            origin = _origin(url)
            own_scope = (f"repository:{repo}:pull",)
            authz, key = await self._auth.authorize(
                origin, base, scopes.get(origin, own_scope), creds
            )
            request = client.build_request(method, url, headers=send_headers | authz)
            with mapped(f"{method} {redact(url)}"):
                response = await client.send(request, stream=True)
            if origin == _origin(base) and "ratelimit-remaining" in response.headers:
                self.last_ratelimit[registry] = response.headers["ratelimit-remaining"]
            status = response.status_code
            if 200 <= status < 300:
                return response
            body = await drain(response)
            if status in _REDIRECT_STATUSES:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise UpstreamProtocolError(f"{method} {redact(url)}: too many redirects")
                url = urljoin(url, response.headers.get("location", ""))
                if urlsplit(url).scheme not in {"http", "https"}:
                    raise UpstreamProtocolError(f"{method} {redact(request.url)}: bad redirect")
                LOGGER.debug("%s redirected to %s", redact(request.url), redact(url))
                continue
            if status == 401 and origin not in scopes:
                values = response.headers.get_list("www-authenticate")
                retry = self._auth.on_unauthorized(origin, base, values, key, creds, repo)
                if retry is not None:
                    scopes[origin] = retry
                    continue
            hub_anonymous = registry == DOCKER_HUB and key is not None and not key.identity
            raise error_for(response, body, hub_anonymous=hub_anonymous)


def _names(registry: str, repo: str) -> tuple[str, str]:
    """Canonical registry, and ``library/`` for single-component Docker Hub names (E20)."""
    registry = canonical_registry(registry)
    if registry == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    return registry, repo


def _algorithm(ref: str) -> str | None:
    """The digest algorithm if ``ref`` is a digest (None for a tag); refuse what we can't check."""
    if not DIGEST_RE.fullmatch(ref):
        return None
    algorithm, _, hexdigest = ref.partition(":")
    pattern = VERIFIABLE.get(algorithm)
    if pattern is None or not pattern.fullmatch(hexdigest):
        raise UpstreamProtocolError(f"cannot verify digest {ref!r}: only sha256/sha512")
    return algorithm


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"
