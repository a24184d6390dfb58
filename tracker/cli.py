"""``shoal tracker``: parse the configuration, run the service until SIGINT or SIGTERM.

``peer.cli`` dispatches ``shoal tracker ...`` here; ``python -m tracker`` runs it too.
"""

from __future__ import annotations

import logging
import signal
import sys

import trio

from tracker.config import TrackerConfig, build_parser, load_config
from tracker.errors import ConfigError
from tracker.service import serve

LOGGER = logging.getLogger(__name__)


async def run_until_signal(config: TrackerConfig) -> None:
    """Serve until the first SIGINT or SIGTERM, then shut down gracefully.

    The signal receiver is open before the service starts, so a signal that arrives
    while it is still starting (binding, registering over mDNS) is queued and still leads
    to a graceful shutdown (with the mDNS goodbye) instead of killing the process.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal() -> None:
            async for signum in signals:
                LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
                return

        await serve(config, shutdown_trigger=until_signal)


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
    trio.run(run_until_signal, config)
    return 0
