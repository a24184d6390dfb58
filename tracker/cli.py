"""``shoal tracker``: parse the configuration, run the service until SIGINT or SIGTERM.

``peer.cli`` dispatches ``shoal tracker ...`` here; ``python -m tracker`` runs it too.
"""

from __future__ import annotations

import logging
import signal
import sys

import trio

from tracker.config import build_parser, load_config
from tracker.errors import ConfigError
from tracker.service import serve


async def until_signal() -> None:
    """Return at the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger(__name__).info(
                "received %s, shutting down", signal.Signals(signum).name
            )
            return


def main(argv: list[str] | None = None) -> int:
    """Run the tracker.

    Args:
        argv: Arguments after ``shoal tracker`` (``sys.argv[1:]`` by default).

    Returns:
        0 after a clean shutdown, 2 for a configuration error.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"shoal tracker: {exc.message}", file=sys.stderr)
        return 2
    trio.run(lambda: serve(config, shutdown_trigger=until_signal))
    return 0
