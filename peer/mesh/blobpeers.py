"""Which peers we share each blob with: whom we dial, whom we take, who declined us (pure).

Theory of operation
-------------------
Links carry any number of blobs; a peer is *on* a blob once one side has sent the other
``Interested`` for it and the other has not declined. :class:`BlobPeers` keeps those sets
(``Swarm`` sends our ``Have`` messages to them) and decides, with the live links passed
in and ``now`` as a float, so that tests need neither sockets nor a clock:

* **Dialling.** While a download runs we dial peers for its blob only while fewer than
  ``dial_cap`` are on it (``to_dial``), skipping those already on it and those that
  declined us less than their ``retry_after`` ago.
* **Taking.** A peer's ``Interested`` is taken while fewer than ``accept_cap`` peers are
  on the blob (``take``); past that, a node that holds the whole blob still takes every
  asker (a seeder is what the latecomers need), and a peer that cannot be sent
  ``Declined`` (wire protocol 1) is taken anyway, as version 1 did.

Version 1 dialled the first 10 holders of every lookup (one a second) with no total, so
a node's links for a blob only grew and every ``Have`` went to all of them. With caps of
10 out / 20 in and seeders open, and the other changes of issue 8, bench/simulate's
1,000-node x 1 GiB flash crowd (real scheduler and tracker) reached p50 1.13x the bound.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = ["DECLINED_RETRY", "MAX_LINKS_IN_PER_BLOB", "MAX_LINKS_PER_BLOB", "BlobPeers"]

# Peers per blob we dial while downloading it: we dial while we have fewer (Kraken caps
# connections per blob at 10).
MAX_LINKS_PER_BLOB: Final = 10
# Peers per blob we take while still downloading it: more than we dial, so that every
# node finds room somewhere (bench/simulate, 1,000 nodes: 20 with 10 above; with 10 the
# latecomers found every node full).
MAX_LINKS_IN_PER_BLOB: Final = 20
# How long we leave a peer that declined us for a blob alone for it (a few lookups), and
# the longest wait a peer's Declined may impose on us.
DECLINED_RETRY: Final = 3.0
MAX_DECLINED_WAIT: Final = 30.0


class BlobPeers:
    """Per-blob peer sets; see the module docstring.

    Args:
        dial_cap: Peers on a blob below which we dial more.
        accept_cap: Peers on a blob below which we take more (unless we hold it whole).
    """

    def __init__(
        self, *, dial_cap: int = MAX_LINKS_PER_BLOB, accept_cap: int = MAX_LINKS_IN_PER_BLOB
    ) -> None:
        self.dial_cap = dial_cap
        self.accept_cap = accept_cap
        self._on: dict[str, set[str]] = {}  # digest -> peers on it
        self._declined: dict[tuple[str, str], float] = {}  # (digest, peer) -> retry at

    def peers(self, digest: str) -> Iterable[str]:
        """The peers on ``digest`` (a copy: safe to iterate while sending)."""
        return tuple(self._on.get(digest, ()))

    def is_on(self, digest: str, peer: str) -> bool:
        return peer in self._on.get(digest, ())

    def count(self, digest: str, live: Collection[str]) -> int:
        """Peers on ``digest`` whose link is up."""
        return sum(1 for peer in self._on.get(digest, ()) if peer in live)

    def add(self, digest: str, peer: str) -> bool:
        """Put ``peer`` on ``digest`` (we sent it Interested). False if it already was."""
        peers = self._on.setdefault(digest, set())
        if peer in peers:
            return False
        peers.add(peer)
        return True

    def take(
        self, digest: str, peer: str, live: Collection[str], *, whole: bool, can_decline: bool
    ) -> bool:
        """``peer`` sent Interested: True to take it (now on ``digest``), False to decline.

        Args:
            live: Peers with a live link.
            whole: We hold the whole blob.
            can_decline: The peer understands ``Declined`` (wire protocol 2).
        """
        peers = self._on.setdefault(digest, set())
        if (
            peer not in peers
            and not whole
            and can_decline
            and self.count(digest, live) >= self.accept_cap
        ):
            return False
        peers.add(peer)
        return True

    def declined(self, digest: str, peer: str, retry_after: float, now: float) -> None:
        """``peer`` declined us for ``digest``: off it, and left alone for ``retry_after``."""
        self._on.get(digest, set()).discard(peer)
        for key in [k for k, until in self._declined.items() if until <= now]:
            del self._declined[key]
        self._declined[(digest, peer)] = now + min(max(retry_after, 0.0), MAX_DECLINED_WAIT)

    def gone(self, peer: str) -> None:
        """The link to ``peer`` ended: it is on no blob (a new link starts over)."""
        for peers in self._on.values():
            peers.discard(peer)

    def to_dial(
        self, digest: str, candidates: Iterable[str], live: Collection[str], now: float
    ) -> list[str]:
        """Which of ``candidates`` (in the tracker's order) to dial for ``digest`` now."""
        room = self.dial_cap - self.count(digest, live)
        out: list[str] = []
        for peer in candidates:
            if len(out) >= room:
                break
            if not (self.is_on(digest, peer) and peer in live) and self._may_ask(digest, peer, now):
                out.append(peer)
        return out

    def may_dial(self, digest: str, peer: str, live: Collection[str], now: float) -> bool:
        """Whether to link to ``peer`` for ``digest`` outside a lookup (a lease holder)."""
        return (
            peer not in live
            and self.count(digest, live) < self.dial_cap
            and self._may_ask(digest, peer, now)
        )

    def _may_ask(self, digest: str, peer: str, now: float) -> bool:
        return self._declined.get((digest, peer), -math.inf) <= now
