"""Argument parsing and exit codes of ``shoal sync|verify|status|config``.

Exit codes (docs/operations.md): 0 everything fine; 1 the check failed (an image failed
to sync, differs from upstream, or is not synced); 2 bad usage or input (flags, malformed
list lines, unreadable files); 3 a node or tracker cannot be reached. Every failure is one
sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import trio

from peer.config import parse_duration
from peer.errors import PeerError
from peer.mirror.upstream import Upstream
from peer.ops import runtime_config
from peer.ops.client import DEFAULT_NODE, NodeClient, parse_upstreams
from peer.ops.errors import BadReference, ImageListError, ServiceUnavailable
from peer.ops.images import ImageRef, images_from_allows, parse_image_list, parse_reference
from peer.ops.oci import Platform, host_platform, parse_platforms
from peer.ops.report import Output
from peer.ops.status import CacheHoldings, Holdings, TrackerHoldings, mesh_status
from peer.ops.sync import sync_images
from peer.ops.verify import verify_image

OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
UNAVAILABLE: Final = 3
#: ``shoal status --stuck-after`` default: three announce intervals of 30 s. Nodes report
#: their bytes every interval, so a download quiet for one or two is not yet stuck.
DEFAULT_STUCK_AFTER: Final = 90.0


class _Usage(Exception):
    """Bad input found after argparse: printed and turned into exit code 2."""


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description)


def _add_peer(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    extra = "; 'none' skips the node" if optional else ""
    parser.add_argument(
        "--peer",
        default=os.environ.get("SHOAL_PEER", DEFAULT_NODE),
        metavar="URL",
        help=f"the node's registry endpoint (default $SHOAL_PEER or {DEFAULT_NODE}{extra})",
    )


def _add_upstream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="REGISTRY=URL",
        help="where a registry really is, as for `shoal peer` (repeatable; default "
        "https://REGISTRY, registry-1.docker.io for docker.io; also $SHOAL_UPSTREAM)",
    )


def _add_platform(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--platform",
        default=default,
        metavar="LIST",
        help=f"os/arch[/variant],... or 'all', for images that are indexes (default {default})",
    )


def _platforms(text: str) -> Sequence[Platform] | None:
    try:
        return parse_platforms(text)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _upstream(args: argparse.Namespace) -> Upstream:
    items = [*args.upstream]
    if os.environ.get("SHOAL_UPSTREAM"):
        items.insert(0, os.environ["SHOAL_UPSTREAM"])
    try:
        return Upstream(parse_upstreams(items))
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _duration(text: str, flag: str) -> float:
    try:
        seconds = parse_duration(text)
    except PeerError as exc:
        raise _Usage(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise _Usage(f"{flag} must be more than 0s")
    return seconds


def _read(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {path}: {exc}") from None


def _run(name: str, main: Callable[[], Awaitable[int]], out: Output) -> int:
    """Run ``main`` under trio, mapping the documented failures to exit codes."""
    try:
        return trio.run(main)
    except (_Usage, ImageListError, BadReference) as exc:
        out.note(f"shoal {name}: {exc}")
        return USAGE
    except ServiceUnavailable as exc:
        out.note(f"shoal {name}: {exc}")
        return UNAVAILABLE
    except PeerError as exc:
        out.note(f"shoal {name}: {exc}")
        return FAILED
    except KeyboardInterrupt:
        out.note(f"shoal {name}: interrupted")
        return 130


# --- sync -----------------------------------------------------------------------------------


def cmd_sync(argv: Sequence[str]) -> int:
    """``shoal sync -f images.txt``: preheat every listed image through a node."""
    parser = _parser("shoal sync", "Preheat the images of a list into the mesh through a node.")
    parser.add_argument("-f", "--file", required=True, help="image list ('-' for stdin)")
    _add_peer(parser)
    _add_platform(parser, str(host_platform()))
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="images resolving and blobs downloading at once (default 4)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    out = Output(json_mode=args.json)
    if args.concurrency < 1:
        out.note("shoal sync: --concurrency must be at least 1")
        return USAGE

    async def main() -> int:
        images = parse_image_list(_read(args.file), source=args.file)
        platforms = _platforms(args.platform)
        async with NodeClient(args.peer) as node:
            await node.ping()
            with out.sync_reporter() as reporter:
                results = await sync_images(
                    node,
                    images,
                    platforms=platforms,
                    concurrency=args.concurrency,
                    reporter=reporter,
                )
        out.sync_summary(results)
        return FAILED if any(r.state == "failed" for r in results) else OK

    return _run("sync", main, out)


# --- verify ---------------------------------------------------------------------------------


def _refs(texts: Sequence[str]) -> list[ImageRef]:
    try:
        return [parse_reference(t) for t in texts]
    except BadReference as exc:
        raise _Usage(str(exc)) from None


def cmd_verify(argv: Sequence[str]) -> int:
    """``shoal verify IMAGE...``: compare what the node serves with upstream."""
    parser = _parser("shoal verify", "Check that a node serves exactly the upstream image.")
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="e.g. docker.io/library/alpine:3.20"
    )
    _add_peer(parser)
    _add_upstream(parser)
    _add_platform(parser, "all")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    out = Output(json_mode=args.json)

    async def main() -> int:
        images = _refs(args.images)
        platforms = _platforms(args.platform)
        upstream = _upstream(args)
        try:
            async with NodeClient(args.peer) as node:
                await node.ping()
                results = []
                for image in images:
                    result = await verify_image(node, upstream, image, platforms=platforms)
                    out.verify_result(result)
                    results.append(result)
        finally:
            await upstream.aclose()
        if out.json:
            out.document(
                {"verified": all(r.ok for r in results), "images": [r.to_json() for r in results]}
            )
        return OK if all(r.ok for r in results) else FAILED

    return _run("verify", main, out)


# --- status ---------------------------------------------------------------------------------


def cmd_status(argv: Sequence[str]) -> int:
    """``shoal status -f images.txt``: which listed images are not synced."""
    parser = _parser(
        "shoal status",
        "Report which images are not synced (moved tags, missing blobs, downloads in "
        "progress) and, with --tracker, downloads stuck anywhere in the mesh.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-f", "--file", help="image list ('-' for stdin)")
    source.add_argument(
        "--allows", metavar="FILE", help="check the exact repositories of an allows.txt, at :latest"
    )
    parser.add_argument(
        "--tracker", metavar="URL", help="check blobs across the mesh with the tracker's admin API"
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        help="check blobs in the cache of the node on this machine",
    )
    parser.add_argument(
        "--stuck-after",
        metavar="DURATION",
        default=f"{DEFAULT_STUCK_AFTER:g}s",
        help="with --tracker: report downloads whose bytes have not moved for this long "
        f"(default {DEFAULT_STUCK_AFTER:g}s)",
    )
    _add_peer(parser, optional=True)
    _add_upstream(parser)
    _add_platform(parser, str(host_platform()))
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    out = Output(json_mode=args.json)

    async def main() -> int:
        if not (args.file or args.allows or args.tracker):
            raise _Usage("give -f FILE or --allows FILE (images to check), or --tracker URL")
        stuck_after = _duration(args.stuck_after, "--stuck-after")
        images: list[ImageRef] = []
        if args.file:
            images = parse_image_list(_read(args.file), source=args.file)
        elif args.allows:
            images, skipped = images_from_allows(_read(args.allows))
            if skipped:
                out.note(
                    f"note: {len(skipped)} wildcard rule(s) name no image and are not "
                    f"checked: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"
                )
        platforms = _platforms(args.platform)
        upstream = _upstream(args)
        tracker = TrackerHoldings(args.tracker) if args.tracker else None
        sources: list[Holdings] = [tracker] if tracker else []
        if args.data is not None:
            sources.append(CacheHoldings(args.data))
        if not sources and images:
            out.note(
                "note: blobs not checked: give --tracker URL (the mesh) and/or --data DIR "
                "(this machine's node)"
            )
        skip_node = args.peer.lower() == "none" or not images  # stuck downloads only
        node = None if skip_node else NodeClient(args.peer)
        try:
            if node is not None:
                await node.ping()
            if tracker is not None:
                await tracker.ping()
            results = await mesh_status(
                images, upstream=upstream, node=node, sources=sources, platforms=platforms
            )
            stuck = None if tracker is None else await tracker.stuck(stuck_after)
        finally:
            await upstream.aclose()
            if node is not None:
                await node.aclose()
            if tracker is not None:
                await tracker.aclose()
        out.status_report(results, [s.label for s in sources], stuck=stuck, stuck_after=stuck_after)
        return OK if all(r.synced for r in results) and not stuck else FAILED

    return _run("status", main, out)


# --- config ---------------------------------------------------------------------------------


def cmd_config(argv: Sequence[str]) -> int:
    """``shoal config containerd|podman|docker``: point a runtime at a node."""
    parser = _parser(
        "shoal config", "Write the configuration that makes a runtime pull through a node."
    )
    parser.add_argument("runtime", choices=("containerd", "podman", "docker"))
    parser.add_argument(
        "--mirror",
        default=runtime_config.DEFAULT_MIRROR,
        metavar="URL",
        help=f"the node (default {runtime_config.DEFAULT_MIRROR})",
    )
    parser.add_argument(
        "--registries",
        default=",".join(runtime_config.DEFAULT_REGISTRIES),
        metavar="LIST",
        help="registries to send through the node (default "
        f"{','.join(runtime_config.DEFAULT_REGISTRIES)})",
    )
    parser.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="REGISTRY=URL",
        help="fall back here instead of the real registry (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write the files under DIR (e.g. /etc/containerd/certs.d, "
        "/etc/containers/registries.conf.d, /etc/docker); default: stdout",
    )
    args = parser.parse_args(argv)
    out = Output(json_mode=False)
    try:
        mirror = runtime_config.Mirror.parse(args.mirror)
        registries = runtime_config.parse_registries(args.registries)
        fallbacks = parse_upstreams(args.fallback)
        existing = None
        if args.runtime == "docker" and args.out is not None:
            existing = _existing_json(args.out / runtime_config.DOCKER_FILE)
        files = runtime_config.render(
            args.runtime, mirror, registries, fallbacks=fallbacks, existing_daemon_json=existing
        )
    except (ValueError, _Usage) as exc:
        out.note(f"shoal config: {exc}")
        return USAGE
    if args.runtime == "docker":
        out.note(runtime_config.DOCKER_NOTE)
    if args.out is None:
        for path, text in files.items():
            if len(files) > 1:
                out.line(f"# --- {path} ---")
            out.line(text.rstrip("\n"))
        return OK
    try:
        for path, text in files.items():
            target = args.out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
            out.note(f"wrote {target}")
    except OSError as exc:
        out.note(f"shoal config: cannot write under {args.out}: {exc}")
        return USAGE
    return OK


def _existing_json(path: Path) -> dict[str, object] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _Usage(f"{path} exists but is not readable JSON ({exc}); fix or move it") from None
    if not isinstance(doc, dict):
        raise _Usage(f"{path} is not a JSON object")
    return doc
