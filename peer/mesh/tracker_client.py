"""The node's tracker client: announce, leave, lookup, piece hashes, tags, leases.

Bodies are ``tracker.protocol`` messages (msgpack) over ``httpx.AsyncClient``. This is the
only module of the peer that knows httpx talks to the tracker: every failure leaves it as
a ``peer.errors`` exception —

* ``httpx.TimeoutException`` / ``httpx.TransportError`` / an undecodable answer →
  :class:`~peer.errors.TrackerUnavailable` (retry later, keep serving through the origin);
* any non-2xx answer → :class:`~peer.errors.TrackerRejected` with its ``status``
  (the two ``*_query`` lookups turn 404 into ``None`` instead).

:func:`announce_loop` announces at start and then every interval the tracker asks for,
backs off exponentially with jitter while the tracker is unreachable (the node carries on
through the origin meanwhile), and says goodbye, shielded and time-boxed, when cancelled.
Time comes from trio, so the loop runs on ``autojump_clock`` in tests.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, NoReturn, TypeVar

import httpx
import trio

from peer.errors import TrackerRejected, TrackerUnavailable
from tracker import auth
from tracker import protocol as p
from tracker.auth import ClusterKeys
from tracker.errors import BadRequest

LOGGER = logging.getLogger(__name__)
R = TypeVar("R", bound=p.Message)

#: One tracker call should take milliseconds; after this the tracker counts as down.
DEFAULT_TIMEOUT: Final = 5.0
#: Goodbye at shutdown gets this long, shielded from the cancellation that caused it.
LEAVE_TIMEOUT: Final = 2.0
#: First retry delay after a failed announce, doubled per failure up to MAX_BACKOFF.
MIN_BACKOFF: Final = 1.0
#: Never wait longer than this to retry: a returning tracker learns about us within it.
MAX_BACKOFF: Final = 60.0
#: Interval used until the tracker tells us its own.
DEFAULT_INTERVAL: Final = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeState:
    """What a node announces, minus its identity (the client adds peer id and session)."""

    host: str
    port: int
    held: tuple[p.BlobHeld, ...] = ()
    in_progress: tuple[p.BlobInProgress, ...] = ()
    upload_slots: int = 0
    load: int = 0
    bytes_served: int = 0
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    errors: tuple[p.NodeError, ...] = ()  # see peer.mesh.incidents


class TrackerClient:
    """Talks to one tracker on behalf of one node.

    Args:
        base_url: ``http://HOST:PORT`` of the tracker; may be changed later (discovery).
        peer_id: This node's id.
        session: Random bytes fixed for this process (8 to 32); proves the id is ours.
        client: An httpx client to use (tests pass one with a mock or ASGI transport);
            by default the tracker client makes and owns one.
        timeout: Per-request timeout in seconds when making its own client.
        keys: The cluster secret(s): every request is signed (``X-Shoal-Auth``,
            :mod:`tracker.auth`) when given.
        clock: Wall clock in Unix seconds, for the signature's timestamp.
    """

    def __init__(
        self,
        base_url: str,
        *,
        peer_id: str,
        session: bytes,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keys: ClusterKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.peer_id = peer_id
        self.session = session
        self._keys = keys
        self._clock = clock
        self._timeout = timeout
        self._owned = client is None
        self._http = client or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Close the httpx client if this object created it."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> TrackerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(
        self, path: str, message: p.Message, reply: type[R], *, missing_ok: bool = False
    ) -> R | None:
        url = self.base_url + path
        body = p.encode(message)
        headers = {"content-type": p.MEDIA_TYPE}
        keys = self._keys
        signed = None
        if keys is not None:
            signed = auth.sign_request(
                keys, method="POST", path=path, body=body, now=self._clock(),
                nonce=secrets.token_bytes(16),
            )  # fmt: skip
            headers[auth.HEADER] = signed.header()
        try:
            # Shielded from cancellation (a request cancelled half-way can leave
            # httpcore's pool wedged under trio, and later tracker calls then hang), but
            # not from deadlines: the caller's time box and our own timeout still apply.
            limit = min(trio.current_effective_deadline(), trio.current_time() + self._timeout)
            with trio.CancelScope(shield=True, deadline=limit) as scope:
                response = await self._http.post(url, content=body, headers=headers)
            if scope.cancelled_caught:
                raise httpx.TimeoutException(f"no answer within {self._timeout}s")
        except httpx.TimeoutException as exc:
            raise TrackerUnavailable(f"tracker timed out: POST {url}") from exc
        except httpx.TransportError as exc:
            raise TrackerUnavailable(f"tracker unreachable: POST {url}: {exc!r}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if not response.is_success:
            raise TrackerRejected(_describe(response), status=response.status_code)
        if keys is not None and signed is not None and not auth.verify_response(
            keys, response.headers.get(auth.HEADER), request=signed,
            status=response.status_code, body=response.content,
        ):  # fmt: skip
            raise TrackerUnavailable(
                f"{url} answered without the cluster's signature: not our tracker, "
                "or one without --cluster-secret"
            )
        try:
            return p.decode(reply, response.content)
        except BadRequest as exc:
            raise TrackerUnavailable(f"tracker answered garbage to {path}: {exc}") from exc

    async def _must(self, path: str, message: p.Message, reply: type[R]) -> R:
        result = await self._call(path, message, reply)
        assert result is not None  # only missing_ok calls return None
        return result

    async def announce(self, state: NodeState) -> p.AnnounceReply:
        """Send this node's full state; returns the tracker's interval and drain flag."""
        message = p.Announce(
            peer_id=self.peer_id,
            session=self.session,
            host=state.host,
            port=state.port,
            held=state.held,
            in_progress=state.in_progress,
            upload_slots=state.upload_slots,
            load=state.load,
            bytes_served=state.bytes_served,
            bytes_from_origin=state.bytes_from_origin,
            bytes_from_peers=state.bytes_from_peers,
            errors=state.errors,
        )
        return await self._must("/v1/announce", message, p.AnnounceReply)

    async def leave(self, *, timeout: float = LEAVE_TIMEOUT) -> bool:
        """Say goodbye, shielded from cancellation and time-boxed; never raises.

        Returns:
            True if the tracker acknowledged.
        """
        with trio.move_on_after(timeout, shield=True):
            try:
                await self._must(
                    "/v1/leave", p.Leave(peer_id=self.peer_id, session=self.session), p.Ack
                )
            except (TrackerUnavailable, TrackerRejected) as exc:
                LOGGER.info("goodbye to the tracker failed: %s", exc)
                return False
            return True
        LOGGER.info("goodbye to the tracker timed out after %.1fs", timeout)
        return False

    async def lookup(self, digest: str, *, limit: int = 16) -> list[p.PeerAddr]:
        """Peers that hold ``digest``, best first; never this node."""
        return list((await self.lookup_reply(digest, limit=limit)).peers)

    async def lookup_reply(self, digest: str, *, limit: int = 16) -> p.LookupReply:
        """The whole lookup answer: the blob's size as announced, and its holders."""
        query = p.Lookup(digest=digest, peer_id=self.peer_id, limit=limit)
        return await self._must("/v1/lookup", query, p.LookupReply)

    async def put_piece_hashes(
        self, digest: str, *, size: int, piece_size: int, hashes: Sequence[bytes]
    ) -> p.PiecesPutReply:
        """Record the hashes of the pieces of a blob this node fetched from the origin.

        ``hashes`` has one entry per piece, ``b""`` for pieces this node has not hashed:
        the tracker merges records per piece (the first hash put for a piece wins), so
        record each piece as soon as it is verified, before offering it to other peers.
        The reply's ``conflict`` means the tracker already knew another hash for one of
        them (or another size).
        """
        record = p.PieceHashes(
            digest=digest,
            size=size,
            piece_size=piece_size,
            hashes=tuple(hashes),
            peer_id=self.peer_id,
        )
        return await self._must("/v1/pieces", record, p.PiecesPutReply)

    async def get_piece_hashes(self, digest: str) -> p.PieceHashes | None:
        """The piece hashes recorded for ``digest`` (``b""`` where unknown), or None."""
        return await self._call(
            "/v1/pieces/query", p.PiecesQuery(digest=digest), p.PieceHashes, missing_ok=True
        )

    async def put_tag(self, record: p.TagRecord) -> bool:
        """Share a tag resolution; False if the tracker has a more recent one."""
        return (await self._must("/v1/tags", record, p.TagPutReply)).stored

    async def get_tag(
        self, *, registry: str, repository: str, tag: str, accept: str
    ) -> p.TagRecord | None:
        """The latest shared resolution of a tag, or None."""
        query = p.TagQuery(registry=registry, repository=repository, tag=tag, accept=accept)
        return await self._call("/v1/tags/query", query, p.TagRecord, missing_ok=True)

    async def lease(
        self, digest: str, piece_index: int, *, ttl: float, count: int = 1, insist: bool = False
    ) -> p.LeaseReply:
        """Ask to be the one node fetching pieces ``[piece_index, piece_index + count)``
        from the origin (ttl 0 releases); the reply's ``count`` says how many it got."""
        request = p.LeaseRequest(
            digest=digest,
            piece_index=piece_index,
            peer_id=self.peer_id,
            session=self.session,
            ttl=ttl,
            count=count,
            insist=insist,
        )
        return await self._must("/v1/lease", request, p.LeaseReply)


def _describe(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = f"{body['error']}: {body['message']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200]
    return f"tracker refused {response.request.url.path} with {response.status_code}: {detail}"


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Delay before retry number ``failures`` (1-based): capped doubling, "equal jitter".

    Half the capped delay is fixed and half random, so retries from many nodes spread out
    while each node still waits at least half the nominal delay.
    """
    nominal = min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** min(failures - 1, 30))
    return nominal / 2 + rng.random() * nominal / 2


async def announce_loop(
    client: TrackerClient,
    state_provider: Callable[[], NodeState],
    interval: float = DEFAULT_INTERVAL,
    *,
    rng: random.Random | None = None,
    on_reply: Callable[[p.AnnounceReply], object] | None = None,
    leave_on_exit: bool = True,
) -> NoReturn:
    """Announce now and forever; back off while the tracker is down; leave when cancelled.

    Args:
        client: The tracker client.
        state_provider: Returns this node's current state (called before every announce).
        interval: Seconds between announces until the tracker names its own interval.
        rng: Jitter source (tests pass a seeded ``random.Random``).
        on_reply: Called with every successful reply (for example to honour ``draining``).
        leave_on_exit: Send a goodbye (shielded, time-boxed) when the loop is cancelled.
    """
    rng = rng or random.Random()
    failures = 0
    try:
        while True:
            try:
                reply = await client.announce(state_provider())
            except (TrackerUnavailable, TrackerRejected) as exc:
                failures += 1
                delay = backoff_delay(failures, rng)
                LOGGER.warning(
                    "announce failed (%d in a row), retry in %.1fs: %s", failures, delay, exc
                )
            else:
                if failures:
                    LOGGER.info("tracker is back after %d failed announces", failures)
                failures = 0
                interval = reply.interval or interval
                delay = interval * (0.9 + 0.2 * rng.random())  # spread re-announces out
                if on_reply is not None:
                    on_reply(reply)
            await trio.sleep(delay)
    finally:
        if leave_on_exit:
            await client.leave()
