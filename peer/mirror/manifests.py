"""``GET|HEAD /v2/<name>/manifests/<reference>``: exact upstream bytes, tags with a TTL.

By digest: the cache, else one upstream ``GET`` verified against the digest, then cached.
By tag: a tag resolved less than ``--tag-ttl`` ago is answered from memory; an older one is
revalidated with an upstream ``HEAD`` (cheap, and not counted by Docker Hub's pull limit),
carrying the client's ``Accept`` (checklist 1.5 rule 1). If the origin fails, the last
known answer — ours, or one another node shared through the tracker — is served with a
``Warning: 299`` header that says how old it is (stale-if-error, E5).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Final

from peer.errors import (
    RegistryError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from peer.httpserver import Request, Response
from peer.mirror.blobs import fetch_whole
from peer.mirror.context import NodeContext
from peer.mirror.names import Target, check_digest, check_tag, is_digest
from peer.mirror.responses import content_response, warning
from peer.mirror.tags import TagEntry, accept_key, accepts

LOGGER = logging.getLogger(__name__)

# What we ask the origin for when the client sent no Accept: the four modern manifest
# types, never schema 1 (checklist 1.5: an absent Accept must not turn into a schema1 fetch).
DEFAULT_ACCEPT: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_FALLBACK_ERRORS = (UpstreamUnavailable, UpstreamRateLimited, UpstreamProtocolError)


def _media_type_of(body: bytes) -> str:
    """A manifest's own ``mediaType`` field (OCI and Docker schema 2 carry one)."""
    try:
        value = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        value = None
    return (
        value if isinstance(value, str) and value else "application/vnd.oci.image.manifest.v1+json"
    )


def _digest_of(body: bytes, digest: str) -> str:
    algorithm = digest.partition(":")[0]
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def _upstream_accept(request: Request) -> list[str]:
    lines = request.header_all("accept")
    return lines if lines else list(DEFAULT_ACCEPT)


def _respond(
    request: Request,
    digest: str,
    media_type: str,
    body: bytes | None,
    size: int,
    extra: list[tuple[str, str]],
) -> Response:
    key = accept_key(request.header_all("accept"))
    if not accepts(key, media_type):
        raise RegistryError(
            "MANIFEST_UNKNOWN",
            f"manifest is {media_type}, which the request's Accept header does not list",
            status=404,
        )
    status = 304 if request.header("if-none-match") in (f'"{digest}"', digest) else 200
    send = body if (body is not None and request.method == "GET" and status == 200) else b""
    return content_response(
        status=status, digest=digest, media_type=media_type, length=size, body=send, extra=extra
    )


async def _by_digest(ctx: NodeContext, request: Request, target: Target, digest: str,
                     extra: list[tuple[str, str]]) -> Response:  # fmt: skip
    entry = ctx.cache.get(digest)
    if entry is not None and entry.media_type:
        body = entry.path.read_bytes()
        # manifests are small: check every one we serve from disk against its digest
        if _digest_of(body, digest) == digest:
            ctx.metrics.hit()
            ctx.metrics.bytes_served.labels("cache").inc(len(body))
            return _respond(request, digest, entry.media_type, body, len(body), extra)
        if ctx.scrub is not None:
            ctx.scrub.mark_corrupt(entry)
        else:
            ctx.cache.remove(digest)
    ctx.metrics.miss()
    try:
        manifest = await ctx.upstream.get_manifest(
            target.registry, target.repository, digest, _upstream_accept(request)
        )
    except _FALLBACK_ERRORS as exc:
        _note_origin_error(ctx, target, f"manifest {digest}", exc)
        if ctx.mesh is None:
            raise
        # Manifests by digest travel like blobs: another node may hold this one.
        body = (await fetch_whole(ctx, target, digest)).path.read_bytes()
        media_type = _media_type_of(body)
        ctx.cache.put_bytes(digest, body, media_type)
        ctx.metrics.bytes_served.labels("peers").inc(len(body))
        return _respond(request, digest, media_type, body, len(body), extra)
    ctx.cache.put_bytes(digest, manifest.body, manifest.media_type)
    ctx.metrics.bytes_served.labels("upstream").inc(len(manifest.body))
    return _respond(request, digest, manifest.media_type, manifest.body, len(manifest.body), extra)


async def serve_manifest(
    ctx: NodeContext, request: Request, target: Target, reference: str
) -> Response:
    extra: list[tuple[str, str]] = []
    if target.via_ns:
        extra.append(("oci-namespace", request.query_one("ns") or target.registry))
    if is_digest(reference):
        return await _by_digest(ctx, request, target, check_digest(reference), extra)
    tag = check_tag(reference)
    akey = accept_key(request.header_all("accept"))
    key = (target.registry, target.repository, tag, akey)
    now = time.time()
    entry = ctx.tags.get(key)
    if entry is None or not ctx.tags.fresh(entry, now):
        try:
            return await _resolve(ctx, request, target, tag, key, entry, extra)
        except UpstreamNotFound:
            raise
        except _FALLBACK_ERRORS as exc:
            _note_origin_error(ctx, target, f"tag {tag}", exc)
            stale = entry
            if stale is None and ctx.tag_fallback is not None:
                stale = await ctx.tag_fallback(target, tag, akey)
            if stale is None:
                raise
            ctx.metrics.stale_tags.inc()
            ctx.metrics.upstream_errors.labels(type(exc).__name__).inc()
            age = max(0, int(now - stale.resolved_at))
            extra.append(warning(f"origin unreachable ({exc}); tag resolved {age}s ago"))
            entry = stale
    return await _serve_entry(ctx, request, target, entry, extra)


def _note_origin_error(ctx: NodeContext, target: Target, what: str, exc: Exception) -> None:
    """Tell the tracker's page (with the next announce) that the origin failed us."""
    if ctx.mesh is not None:
        message = f"{target.registry}/{target.repository}: {what}: {exc}"
        ctx.mesh.incidents.note(time.time(), "origin", message)


async def _serve_entry(ctx: NodeContext, request: Request, target: Target, entry: TagEntry,
                       extra: list[tuple[str, str]]) -> Response:  # fmt: skip
    cached = ctx.cache.get(entry.digest)
    if cached is None and request.method == "HEAD":
        ctx.metrics.hit()
        return _respond(request, entry.digest, entry.media_type, None, entry.size, extra)
    return await _by_digest(ctx, request, target, entry.digest, extra)


async def _resolve(
    ctx: NodeContext,
    request: Request,
    target: Target,
    tag: str,
    key: tuple[str, str, str, str],
    old: TagEntry | None,
    extra: list[tuple[str, str]],
) -> Response:
    """Ask the origin what ``tag`` is now; one request in the common cases."""
    accept = _upstream_accept(request)
    now = time.time()
    if request.method == "HEAD" or (old is not None and old.digest in ctx.cache):
        meta = await ctx.upstream.head_manifest(target.registry, target.repository, tag, accept)
        entry = TagEntry(meta.digest, meta.media_type, meta.size, now)
        _remember(ctx, target, tag, key, entry)
        return await _serve_entry(ctx, request, target, entry, extra)
    manifest = await ctx.upstream.get_manifest(target.registry, target.repository, tag, accept)
    ctx.metrics.miss()
    ctx.cache.put_bytes(manifest.digest, manifest.body, manifest.media_type)
    entry = TagEntry(manifest.digest, manifest.media_type, len(manifest.body), now)
    _remember(ctx, target, tag, key, entry)
    ctx.metrics.bytes_served.labels("upstream").inc(len(manifest.body))
    return _respond(request, manifest.digest, manifest.media_type, manifest.body,
                    len(manifest.body), extra)  # fmt: skip


def _remember(ctx: NodeContext, target: Target, tag: str, key: tuple[str, str, str, str],
              entry: TagEntry) -> None:  # fmt: skip
    ctx.tags.put(key, entry)
    if ctx.on_tag_resolved is not None:
        ctx.on_tag_resolved(target, tag, key[3], entry)
