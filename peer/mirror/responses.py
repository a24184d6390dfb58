"""Building registry responses: common headers, OCI error bodies, upstream error mapping."""

from __future__ import annotations

import json
import math
from typing import Final

from peer.errors import (
    CacheError,
    IntegrityError,
    PeerError,
    RegistryError,
    UpstreamDenied,
    UpstreamNotFound,
    UpstreamRateLimited,
)
from peer.httpserver import Body, Response

API_VERSION: Final = ("docker-distribution-api-version", "registry/2.0")
# distribution's blob server: blobs are immutable, cache for a year.
BLOB_CACHE_CONTROL: Final = "max-age=31536000"
# Warning headers are limited to 4096 bytes in all (spec.md "Warnings").
MAX_WARNING: Final = 4000


def error_response(err: RegistryError) -> Response:
    """``{"errors": [{code, message, detail}]}`` with the error's status."""
    entry: dict[str, object] = {"code": err.code, "message": err.message}
    if err.detail is not None:
        entry["detail"] = err.detail
    body = json.dumps({"errors": [entry]}).encode()
    headers = [
        API_VERSION,
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *err.headers.items(),
    ]
    return Response(err.status, headers, body)


def to_registry_error(exc: PeerError, *, kind: str) -> RegistryError:
    """Map an internal error to what the client sees. ``kind`` is manifests or blobs.

    Misses are 404 so runtimes fall back to the next host (checklist E7); an origin that is
    down or broken is 503 — never a bare 500.
    """
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, UpstreamNotFound):
        code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
        return RegistryError(code, f"{kind[:-1]} unknown to the origin registry", status=404)
    if isinstance(exc, UpstreamDenied):
        return RegistryError("DENIED", f"the origin registry refused access: {exc}", status=403)
    if isinstance(exc, UpstreamRateLimited):
        retry = exc.retry_after if exc.retry_after is not None else 60.0
        return RegistryError(
            "TOOMANYREQUESTS",
            "the origin registry is rate-limiting this node and the content is not cached",
            status=429,
            headers={"retry-after": str(max(1, math.ceil(retry)))},
        )
    if isinstance(exc, IntegrityError):
        return RegistryError(
            "UNAVAILABLE", f"content failed verification and was discarded: {exc}", status=503
        )
    if isinstance(exc, CacheError):
        return RegistryError("UNAVAILABLE", f"node cache cannot take this blob: {exc}", status=503)
    return RegistryError(
        "UNAVAILABLE",
        f"origin registry unreachable and the content is not cached: {exc}",
        status=503,
        headers={"retry-after": "5"},
    )


def warning(text: str) -> tuple[str, str]:
    """A ``Warning: 299 - "…"`` header (RFC 7234 form the spec uses)."""
    clean = text.replace('"', "'").replace("\r", " ").replace("\n", " ")[:MAX_WARNING]
    return ("warning", f'299 - "{clean}"')


def content_response(
    *,
    status: int,
    digest: str,
    media_type: str,
    length: int,
    body: Body,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    headers = [
        API_VERSION,
        ("content-type", media_type),
        ("content-length", str(length)),
        ("docker-content-digest", digest),
        ("etag", f'"{digest}"'),
        *(extra or []),
    ]
    return Response(status, headers, body)
