"""The ``shoal`` command: ``peer``, ``tracker``, ``up`` and the operator tools."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from peer import __version__
from peer.config import PEER_FLAGS, add_flags, merged, peer_config
from peer.errors import ConfigError

LOGGER = logging.getLogger("shoal")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # one line per tracker call is noise at info level
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
            return


def _peer_parser(prog: str = "shoal peer") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a node: an OCI registry mirror that shares pieces with peers."
    )
    add_flags(parser, PEER_FLAGS)
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return parser


def cmd_peer(argv: Sequence[str]) -> int:
    from peer.service import serve

    args = _peer_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = peer_config(merged(args, PEER_FLAGS))
    except ConfigError as exc:
        print(f"shoal peer: {exc}", file=sys.stderr)
        return 2
    trio.run(lambda: serve(config, shutdown_trigger=_until_signal))
    return 0


def cmd_up(argv: Sequence[str]) -> int:
    """A tracker and a node in one process, for one machine or a first try."""
    from peer.up import run_up

    args = _peer_parser("shoal up").parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = peer_config(merged(args, PEER_FLAGS))
    except ConfigError as exc:
        print(f"shoal up: {exc}", file=sys.stderr)
        return 2
    trio.run(lambda: run_up(config, shutdown_trigger=_until_signal))
    return 0


def cmd_tracker(argv: Sequence[str]) -> int:
    from tracker.cli import main as tracker_main

    return tracker_main(list(argv))


def cmd_sync(argv: Sequence[str]) -> int:
    from peer.ops.cli import cmd_sync as run

    return run(argv)


def cmd_verify(argv: Sequence[str]) -> int:
    from peer.ops.cli import cmd_verify as run

    return run(argv)


def cmd_status(argv: Sequence[str]) -> int:
    from peer.ops.cli import cmd_status as run

    return run(argv)


def cmd_config(argv: Sequence[str]) -> int:
    from peer.ops.cli import cmd_config as run

    return run(argv)


COMMANDS = {
    "peer": (cmd_peer, "run a node (registry mirror + P2P)"),
    "tracker": (cmd_tracker, "run the tracker"),
    "up": (cmd_up, "run a tracker and a node in one process"),
    "sync": (cmd_sync, "preheat a list of images into the mesh through a node"),
    "verify": (cmd_verify, "check that a node serves exactly the upstream image"),
    "status": (cmd_status, "report which images are not synced"),
    "config": (cmd_config, "write containerd/podman/docker config pointing at a node"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: shoal <command> [options]   (shoal {__version__})\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if args else 2
    if args[0] == "--version":
        print(f"shoal {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"shoal: unknown command {args[0]!r}; try 'shoal --help'", file=sys.stderr)
        return 2
    return command[0](args[1:])


if __name__ == "__main__":
    sys.exit(main())
