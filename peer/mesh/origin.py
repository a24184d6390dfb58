"""One origin range request cut into pieces as they arrive: the origin half of a fetch.

A node fetching pieces from the origin asks for a *run* of consecutive pieces at once
(one lease at the tracker, one HTTP ``Range`` request; usually one piece in a crowd, up to
``RUN_BYTES`` when it fetches the blob alone) and takes each piece as soon as its last
byte is in: the bytes go from the socket straight into the piece's buffer
(:meth:`~peer.mirror.answers.BlobResponse.readinto`), and the caller hashes, writes and
offers that piece while the rest of the run is still on the wire, and may cut the run
short after any piece (other nodes took the rest over at the tracker).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from peer.errors import UpstreamUnavailable
from peer.mirror.answers import BlobResponse
from peer.mirror.names import Target
from peer.mirror.upstream import Upstream

# Skipping the head of a 200 answer to a range request (an origin without Range support).
_SKIP_CHUNK = 1 << 20


async def read_pieces(
    upstream: Upstream,
    target: Target,
    digest: str,
    spans: Sequence[tuple[int, int]],
    on_piece: Callable[[int, bytearray], bool],
) -> int:
    """Fetch the consecutive byte ``spans`` (``[start, end)`` each) in one range request,
    calling ``on_piece(k, data)`` as span ``k`` completes; returns the bytes received.
    ``on_piece`` returning False ends the request there (the connection is dropped).
    ``data`` is one buffer reused for every span (no allocation and page faults per
    piece): it is valid only during the call, so ``on_piece`` must copy what it keeps.

    Raises:
        UpstreamError: The origin refused or broke off (pieces already handed on stay).
        ValueError: ``spans`` is empty or not consecutive.
    """
    if not spans or any(a[1] != b[0] for a, b in itertools.pairwise(spans)):
        raise ValueError(f"spans must be consecutive and non-empty: {spans!r}")
    first, last = spans[0][0], spans[-1][1] - 1
    received = 0
    async with upstream.open_blob(
        target.registry, target.repository, digest, start=first, end=last
    ) as resp:
        if resp.start != first:  # a 200 to our range: skip to it
            received += await _skip(resp, first - resp.start)
        buffer = bytearray(max(end - start for start, end in spans))
        for k, (start, end) in enumerate(spans):
            data = buffer if len(buffer) == end - start else bytearray(end - start)
            view = memoryview(data)
            filled = 0
            while filled < len(data):
                n = await resp.readinto(view[filled:])
                if n == 0:
                    raise UpstreamUnavailable(
                        f"origin sent {start + filled - first} bytes for {first}-{last}"
                    )
                filled += n
            received += filled
            if not on_piece(k, data):
                break
    return received


async def _skip(resp: BlobResponse, count: int) -> int:
    scratch = memoryview(bytearray(min(count, _SKIP_CHUNK)))
    left = count
    while left:
        n = await resp.readinto(scratch[: min(left, len(scratch))])
        if n == 0:
            raise UpstreamUnavailable(f"origin answered with {count - left} bytes")
        left -= n
    return count
