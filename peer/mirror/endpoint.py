"""The registry endpoint: route a request, check it, answer it — never a 500, never a crash.

Order of checks for ``/v2/...`` (checklist 5.1): method (writes → 405 ``UNSUPPORTED``),
path shape, name grammar and upstream selection (``ns`` → path prefix → default), the
``allows.txt`` whitelist (403 ``DENIED``), reference grammar — all before any origin
request — then, for a private registry, the client's proof of access
(:mod:`peer.mirror.access`) before anything is served, from the cache or elsewhere.
Every response carries ``Docker-Distribution-API-Version``.
"""

from __future__ import annotations

import logging
import time

import trio

from peer.errors import PeerError, RegistryError
from peer.httpserver import Request, Response
from peer.mirror.blobs import serve_blob
from peer.mirror.context import NodeContext
from peer.mirror.manifests import serve_manifest
from peer.mirror.names import (
    Target,
    check_digest,
    check_tag,
    is_digest,
    parse_path,
    select_target,
)
from peer.mirror.responses import API_VERSION, error_response, to_registry_error

LOGGER = logging.getLogger(__name__)

_READ_METHODS = ("GET", "HEAD")


def _json(status: int, body: bytes) -> Response:
    return Response(
        status,
        [API_VERSION, ("content-type", "application/json"), ("content-length", str(len(body)))],
        body,
    )


class Mirror:
    """The node's HTTP handler (``await mirror.handle(request)``)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def handle(self, request: Request) -> Response:
        route = parse_path(request.path)
        kind: str = route.kind if route is not None else "other"
        try:
            kind, response = await self._dispatch(request)
        except PeerError as exc:
            response = error_response(to_registry_error(exc, kind=kind))
        except trio.TooSlowError:
            response = error_response(
                RegistryError("UNAVAILABLE", "origin registry timed out", status=503)
            )
        except Exception:  # per-request boundary: a bug must cost one request, not the node
            LOGGER.exception("request %s %s failed", request.method, request.target)
            response = error_response(
                RegistryError("UNKNOWN", "internal error; see the node's log", status=500)
            )
        self.ctx.metrics.requests.labels(kind, request.method, str(response.status)).inc()
        return response

    async def _dispatch(self, request: Request) -> tuple[str, Response]:
        path = request.path
        if path == "/healthz":
            return "health", Response(
                200, [("content-type", "text/plain"), ("content-length", "3")], b"ok\n"
            )
        if path == "/metrics":
            body = self.ctx.metrics.render()
            headers = [("content-type", self.ctx.metrics.content_type),
                       ("content-length", str(len(body)))]  # fmt: skip
            return "metrics", Response(200, headers, body)
        route = parse_path(path)
        if request.method not in _READ_METHODS and path.startswith("/v2"):
            raise RegistryError(
                "UNSUPPORTED",
                "this node is a pull-through mirror: only GET and HEAD are supported",
                status=405,
                headers={"allow": "GET, HEAD"},
            )
        if route is None:
            raise RegistryError("NAME_UNKNOWN", "not a registry API path", status=404)
        if request.method not in _READ_METHODS:
            raise RegistryError("UNSUPPORTED", "only GET and HEAD", status=405)
        if route.kind == "base":
            if self.ctx.access is not None:
                self.ctx.access.check_base(request)
            return "base", _json(200, b"{}")
        target = select_target(
            route.name, ns=request.query_one("ns"), default_registry=self.ctx.default_registry
        )
        if not self.ctx.allows.allows(target.image, now=time.monotonic()):
            raise RegistryError(
                "DENIED",
                f"{target.image} is not in this node's allows.txt; ask the operator to add it",
                status=403,
                detail={"image": target.image},
            )
        if route.kind == "manifests":
            await self._check_access(request, target, "manifests", route.reference)
            return "manifests", await serve_manifest(self.ctx, request, target, route.reference)
        if route.kind == "blobs":
            digest = check_digest(route.reference)
            await self._check_access(request, target, "blobs", digest)
            return "blobs", await serve_blob(self.ctx, request, target, digest)
        # tags/list and referrers are optional for a mirror; 404 makes clients fall back
        # (referrers: to the sha256-<hex> tag schema, spec.md "Listing Referrers").
        raise RegistryError(
            "NAME_UNKNOWN" if route.kind == "tags" else "MANIFEST_UNKNOWN",
            f"{route.kind} are not mirrored by this node",
            status=404,
        )

    async def _check_access(
        self, request: Request, target: Target, kind: str, reference: str
    ) -> None:
        """Private registries only: the client must prove access (grammar checked first)."""
        if self.ctx.access is not None:
            if kind == "manifests":
                reference = (
                    check_digest(reference) if is_digest(reference) else check_tag(reference)
                )
            await self.ctx.access.check(request, target, kind, reference)
