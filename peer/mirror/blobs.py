"""``GET|HEAD /v2/<name>/blobs/<digest>``: from the cache, a download in flight, or a new one.

Cache hits go out with ``sendfile``. A miss starts one background download per digest
(:mod:`peer.mirror.flight`); the request, and every request for the same digest after it,
streams the growing temp file, with ``Range`` honoured on all three paths (checklist E9/E10,
E16). A cold ``HEAD`` asks the origin with ``HEAD`` instead of downloading (E2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from peer.errors import (
    CacheError,
    IntegrityError,
    RegistryError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from peer.httpserver import FileBody, Request, Response
from peer.mirror.context import NodeContext
from peer.mirror.flight import Download
from peer.mirror.names import Target
from peer.mirror.ranges import ByteRange, Unsatisfiable, parse_range
from peer.mirror.responses import BLOB_CACHE_CONTROL, content_response
from peer.mirror.spool import spool
from peer.mirror.writer import CacheEntry

LOGGER = logging.getLogger(__name__)

OCTET: str = "application/octet-stream"


def _headers_for(
    request: Request, digest: str, size: int
) -> tuple[int, ByteRange | None, list[tuple[str, str]]]:
    """Status, range and extra headers for a blob of ``size`` bytes."""
    extra = [("accept-ranges", "bytes"), ("cache-control", BLOB_CACHE_CONTROL)]
    try:
        byte_range = parse_range(request.header("range"), size)
    except Unsatisfiable:
        raise RegistryError(
            "RANGE_INVALID",
            f"requested range not satisfiable for a blob of {size} bytes",
            status=416,
            headers={"content-range": f"bytes */{size}"},
        ) from None
    if byte_range is None:
        return 200, None, extra
    return 206, byte_range, [*extra, ("content-range", byte_range.content_range())]


def _not_modified(request: Request, digest: str) -> bool:
    return request.header("if-none-match") in (f'"{digest}"', digest)


def serve_cached(ctx: NodeContext, request: Request, entry: CacheEntry) -> Response:
    """A cache hit: ``sendfile`` the file, pinned against eviction while it is read."""
    status, byte_range, extra = _headers_for(request, entry.digest, entry.size)
    if _not_modified(request, entry.digest):
        return content_response(
            status=304, digest=entry.digest, media_type=OCTET, length=entry.size, body=b"",
            extra=extra,
        )  # fmt: skip
    first, length = (byte_range.first, byte_range.length) if byte_range else (0, entry.size)
    if request.method == "HEAD":
        return content_response(
            status=status, digest=entry.digest, media_type=OCTET, length=length, body=b"",
            extra=extra,
        )  # fmt: skip
    pin = ctx.cache.pin(entry.digest)
    pin.__enter__()
    try:
        fd = os.open(entry.path, os.O_RDONLY)
    except OSError:
        pin.__exit__(None, None, None)
        ctx.cache.remove(entry.digest)
        raise CacheError(f"cached blob {entry.digest} vanished from disk") from None

    def close() -> None:
        os.close(fd)
        pin.__exit__(None, None, None)

    ctx.metrics.bytes_served.labels("cache").inc(length)
    response = content_response(
        status=status, digest=entry.digest, media_type=OCTET, length=length,
        body=FileBody(fd, first, length), extra=extra,
    )  # fmt: skip
    response.on_close = close
    return response


async def _counted(
    ctx: NodeContext, source: str, body: AsyncIterator[FileBody]
) -> AsyncIterator[FileBody]:
    async for chunk in body:
        ctx.metrics.bytes_served.labels(source).inc(len(chunk))
        yield chunk


async def serve_blob(ctx: NodeContext, request: Request, target: Target, digest: str) -> Response:
    if ctx.scrub is not None and digest in ctx.cache.unverified:
        await ctx.scrub.ensure(digest)  # loaded from disk: re-hash it before it goes out
    entry = ctx.cache.get(digest)
    if entry is not None:
        ctx.metrics.hit()
        return serve_cached(ctx, request, entry)
    download = ctx.flights.get(digest)
    if download is None:
        ctx.metrics.miss()
        if request.method == "HEAD":
            size = await _cold_size(ctx, target, digest)
            status, byte_range, extra = _headers_for(request, digest, size)
            return content_response(
                status=status, digest=digest, media_type=OCTET,
                length=byte_range.length if byte_range else size, body=b"", extra=extra,
            )  # fmt: skip
        download = start_download(ctx, target, digest)
    size = await download.wait_ready()
    status, byte_range, extra = _headers_for(request, digest, size)
    first, last = (byte_range.first, byte_range.last) if byte_range else (0, size - 1)
    if request.method == "HEAD" or size == 0:
        return content_response(
            status=status, digest=digest, media_type=OCTET, length=last - first + 1, body=b"",
            extra=extra,
        )  # fmt: skip
    fd = download.join()
    if fd is None:  # finished between our checks: it is in the cache now, or it failed
        entry = ctx.cache.get(digest)
        if entry is None:
            raise UpstreamUnavailable(f"download of {digest} failed")
        return serve_cached(ctx, request, entry)
    body = _counted(ctx, download.source, download.read(fd, first, last))
    return content_response(
        status=status, digest=digest, media_type=OCTET, length=last - first + 1, body=body,
        extra=extra,
    )  # fmt: skip


async def _cold_size(ctx: NodeContext, target: Target, digest: str) -> int:
    """A cold blob's size: the origin's HEAD, or the mesh's word when the origin fails."""
    try:
        return await ctx.upstream.head_blob(target.registry, target.repository, digest)
    except (UpstreamUnavailable, UpstreamRateLimited, UpstreamProtocolError):
        if ctx.mesh is None:
            raise
        return await ctx.mesh.blob_size(target, digest, origin=False)


def start_download(
    ctx: NodeContext, target: Target, digest: str, *, force_mesh: bool = False
) -> Download:
    """Begin the single download of ``digest`` in the node's nursery.

    Through the mesh when there is one and the tracker answers (or ``force_mesh``: the
    origin just failed us); else streamed straight from the origin.
    """
    download = ctx.flights.begin(digest)
    ctx.metrics.downloads.set(len(ctx.flights))
    mesh = ctx.mesh is not None and (ctx.mesh.tracker_ok or force_mesh)
    ctx.nursery.start_soon(_download, ctx, target, digest, download, mesh)
    return download


async def fetch_whole(ctx: NodeContext, target: Target, digest: str) -> CacheEntry:
    """Get ``digest`` into the cache through the mesh (used when the origin fails)."""
    download = ctx.flights.get(digest) or start_download(ctx, target, digest, force_mesh=True)
    await download.wait_done()
    entry = ctx.cache.get(digest)
    if entry is None:
        raise UpstreamUnavailable(f"{digest} vanished from the cache right after download")
    return entry


async def _download(
    ctx: NodeContext, target: Target, digest: str, download: Download, mesh: bool
) -> None:
    writer = None
    try:
        if mesh and ctx.mesh is not None:
            ctx.metrics.swarm_downloads.inc()
            try:
                await ctx.mesh.fetch(target, digest, download, stall_timeout=ctx.stall_timeout)
            finally:
                ctx.metrics.swarm_downloads.dec()
            download.finish()
            return
        async with ctx.source.open_blob(target, digest) as (size, body):
            writer = ctx.cache.new_writer(digest, expected_size=size)
            download.started(size, writer.path)
            await spool(body, writer, download)
            if writer.written != size:
                raise UpstreamUnavailable(
                    f"origin sent {writer.written} of {size} bytes of {digest}"
                )
            writer.commit(OCTET)
            writer = None
        download.finish()
        if ctx.mesh is not None:
            await ctx.mesh.publish_hashes(digest)
        ctx.metrics.cache_bytes.set(ctx.cache.used_bytes)
        ctx.metrics.cache_entries.set(len(ctx.cache.entries()))
    except IntegrityError as exc:
        LOGGER.warning("blob %s from %s failed verification: %s", digest, target.image, exc)
        ctx.metrics.upstream_errors.labels("integrity").inc()
        download.fail(exc)
    except Exception as exc:  # per-download boundary: every reader gets the error
        LOGGER.info("download of %s from %s failed: %s", digest, target.image, exc)
        ctx.metrics.upstream_errors.labels(type(exc).__name__).inc()
        download.fail(exc)
    except BaseException:
        download.fail(UpstreamUnavailable("node shutting down"))
        raise
    finally:
        if writer is not None:
            writer.abort()
        ctx.flights.end(download)
        ctx.metrics.downloads.set(len(ctx.flights))
