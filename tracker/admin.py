"""The admin JSON API: read the swarm, drain or ban a peer, forget a blob.

Reads are open. Mutations need ``Authorization: Bearer <admin token>``: without it or with
a wrong one they are refused with 401; when the tracker has no token configured every
mutation is refused with 403, so an operator cannot forget to protect them. The token is
compared in constant time. Path parameters are validated with the peer protocol's own
grammars before the store sees them, so a bad digest is a 400, an unknown one a 404.

Routes::

    GET    /admin/peers?offset=&limit=          live peers, sorted by id
    GET    /admin/blobs?offset=&limit=          blobs with live holders, sorted by digest
    GET    /admin/blobs/{digest}                one blob and its holders
    DELETE /admin/blobs/{digest}                forget a blob (holders, piece hashes, tags)
    POST   /admin/peers/{peer_id}/drain         stop handing a peer out; it is told to drain
    POST   /admin/peers/{peer_id}/ban           forget a peer and refuse it for a while
    GET    /admin/transfers?stalled_for=&limit= downloads in progress, with last progress
    GET    /admin/errors?limit=                 recent errors (nodes' reports, refusals)
    GET    /admin/traffic                       bytes from origin vs peers over time
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import Final

from tracker import _wire
from tracker.activity import MAX_ERRORS
from tracker.asgi import Request, Response, json_response
from tracker.errors import BadMessage, BadRequest, Forbidden, NotFound, Unauthorized
from tracker.registry import MAX_PAGE
from tracker.store import Store

#: Default page size of the listings: one screenful for humans, cheap for the store.
DEFAULT_PAGE: Final = 1000
#: Largest ``offset`` accepted: far past any real swarm, small enough to stay an int64.
MAX_OFFSET: Final = 1 << 31
#: Largest ``stalled_for`` accepted (seconds): a week; a download stalled longer is gone.
MAX_STALL: Final = 7 * 86_400

Handler = Callable[[Request], Awaitable[Response]]


def _param(value: str, rule: _wire.Rule) -> str:
    try:
        return _wire.str_(value, "path", rule)
    except BadMessage as exc:
        raise BadRequest(exc.message) from None


def _int_query(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or not lo <= int(raw) <= hi:
        raise BadRequest(f"query parameter {name!r} must be an integer in [{lo}, {hi}]")
    return int(raw)


class AdminApi:
    """Handlers and routing of ``/admin/...``.

    Args:
        store: Where state lives.
        admin_token: The bearer token mutations need; None disables mutations (403).
        clock: Wall clock in Unix seconds.
    """

    def __init__(
        self, store: Store, *, admin_token: str | None, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._token = admin_token.encode() if admin_token else None
        self._clock = clock

    def match(self, path: str) -> tuple[str, dict[str, Handler]]:
        """The route template and its handlers by method for ``path``.

        Raises:
            NotFound: No route has this shape.
        """
        parts = path.split("/")
        if path == "/admin/peers":
            return "/admin/peers", {"GET": self._peers}
        if path == "/admin/blobs":
            return "/admin/blobs", {"GET": self._blobs}
        if path == "/admin/transfers":
            return "/admin/transfers", {"GET": self._transfers}
        if path == "/admin/errors":
            return "/admin/errors", {"GET": self._errors}
        if path == "/admin/traffic":
            return "/admin/traffic", {"GET": self._traffic}
        if len(parts) == 4 and parts[1:3] == ["admin", "blobs"]:
            return "/admin/blobs/{digest}", {"GET": self._blob, "DELETE": self._forget}
        if len(parts) == 5 and parts[1:3] == ["admin", "peers"] and parts[4] == "drain":
            return "/admin/peers/{peer_id}/drain", {"POST": self._drain}
        if len(parts) == 5 and parts[1:3] == ["admin", "peers"] and parts[4] == "ban":
            return "/admin/peers/{peer_id}/ban", {"POST": self._ban}
        raise NotFound(f"no route {path[:200]!r}")

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            raise Forbidden("admin mutations are disabled: the tracker has no admin token")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = credentials.strip().encode("latin-1", errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._token):
            raise Unauthorized("missing or wrong bearer token")

    async def _peers(self, request: Request) -> Response:
        offset = _int_query(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        peers = await self._store.peers(self._clock(), offset=offset, limit=limit)
        rows = [dataclasses.asdict(v) for v in peers]
        return json_response(200, {"offset": offset, "limit": limit, "peers": rows})

    async def _blobs(self, request: Request) -> Response:
        offset = _int_query(request, "offset", 0, 0, MAX_OFFSET)
        limit = _int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        blobs = await self._store.blobs(self._clock(), offset=offset, limit=limit)
        rows = [dataclasses.asdict(v) for v in blobs]
        return json_response(200, {"offset": offset, "limit": limit, "blobs": rows})

    async def _transfers(self, request: Request) -> Response:
        stalled_for = _int_query(request, "stalled_for", 0, 0, MAX_STALL)
        limit = _int_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        now = self._clock()
        views = await self._store.transfers(now, limit=MAX_PAGE)
        rows = []
        for v in views:
            stalled = None if v.last_progress is None else max(0.0, now - v.last_progress)
            if stalled_for and (stalled is None or stalled < stalled_for):
                continue
            rows.append(dataclasses.asdict(v) | {"stalled_for": stalled})
        return json_response(
            200, {"now": now, "stalled_for": stalled_for, "transfers": rows[:limit]}
        )

    async def _errors(self, request: Request) -> Response:
        limit = _int_query(request, "limit", MAX_ERRORS, 1, MAX_ERRORS)
        events = await self._store.errors(limit=limit)
        return json_response(200, {"errors": [dataclasses.asdict(e) for e in events]})

    async def _traffic(self, request: Request) -> Response:
        points = await self._store.traffic()
        return json_response(200, {"points": [dataclasses.asdict(x) for x in points]})

    async def _blob(self, request: Request) -> Response:
        digest = _param(request.path.split("/")[3], _wire.DIGEST)
        detail = await self._store.blob(digest, self._clock())
        if detail is None:
            raise NotFound(f"no live peer holds {digest}")
        return json_response(200, dataclasses.asdict(detail))

    async def _forget(self, request: Request) -> Response:
        self._authorize(request)
        digest = _param(request.path.split("/")[3], _wire.DIGEST)
        if not await self._store.forget(digest):
            raise NotFound(f"nothing known about {digest}")
        return json_response(200, {"digest": digest, "forgotten": True})

    async def _drain(self, request: Request) -> Response:
        self._authorize(request)
        peer_id = _param(request.path.split("/")[3], _wire.PEER_ID)
        if not await self._store.drain(peer_id, self._clock()):
            raise NotFound(f"no live peer {peer_id!r}")
        return json_response(200, {"peer_id": peer_id, "draining": True})

    async def _ban(self, request: Request) -> Response:
        self._authorize(request)
        peer_id = _param(request.path.split("/")[3], _wire.PEER_ID)
        now = self._clock()
        await self._store.ban(peer_id, now)
        until = now + self._store.policy.ban_seconds
        return json_response(200, {"peer_id": peer_id, "banned_until": until})
