"""The tracker's HTTP shell: one ASGI callable over a :class:`~tracker.store.Store`.

Routes (the OpenAPI document ``tracker/openapi.json`` describes every one)::

    POST   /v1/announce  /v1/leave  /v1/lookup     peer protocol, msgpack bodies
    POST   /v1/pieces    /v1/pieces/query          per-piece hashes
    POST   /v1/tags      /v1/tags/query            tag -> digest resolutions
    POST   /v1/lease                               origin-fetch leases
    GET    /admin/...  POST/DELETE /admin/...      admin JSON API (tracker.admin)
    GET    /healthz  /metrics  /openapi.json  /    health, Prometheus, schema, status page

With a cluster secret, every ``/v1`` request must be signed (``X-Shoal-Auth``, see
``tracker.auth``) or is answered ``401 cluster_auth`` before its body is decoded; the
2xx answers to signed requests are signed in turn.

The shell only moves bytes: it caps and reads bodies, decodes them with
``tracker.protocol``, calls the store with ``now`` from its clock, and renders any
:class:`~tracker.errors.TrackerError` as a JSON error with the error's ``status_hint``.
The one broad ``except Exception`` is the per-request boundary: a bug answers 500 for that
request and the process keeps serving.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

from tracker import protocol as p
from tracker.activity import ErrorEvent
from tracker.admin import AdminApi
from tracker.asgi import (
    Message,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error_response,
    json_response,
    send_response,
)
from tracker.auth import (
    HEADER,
    ClusterKeys,
    ReplayGuard,
    SignedRequest,
    sign_response,
    verify_request,
)
from tracker.errors import (
    MethodNotAllowed,
    NotFound,
    StoreUnavailable,
    TrackerError,
    UnsupportedMediaType,
)
from tracker.metrics import TrackerMetrics, count_stalled
from tracker.registry import MAX_PAGE
from tracker.status_data import STALL_INTERVALS, gather_page
from tracker.status_page import render_status_page
from tracker.store import Store

LOGGER = logging.getLogger(__name__)

#: Media types accepted on /v1 bodies: the usual name, two others seen in the wild, and
#: octet-stream so generic HTTP tools (curl, schema fuzzers) can send raw bytes.
MSGPACK_TYPES: Final = frozenset(
    {p.MEDIA_TYPE, "application/x-msgpack", "application/vnd.msgpack", "application/octet-stream"}
)
#: Rows the status page shows per table: a page a human reads, not a dump.
STATUS_ROWS: Final = 100
#: Recent errors the status page shows.
STATUS_ERRORS: Final = 20
#: Tag resolutions the status page checks for "not synced" (the most recent ones).
STATUS_TAGS: Final = 50
#: A /v1 refusal of one kind on one route is recorded at most this often (seconds), so a
#: misbehaving client cannot flush the recent-errors list or flood the store with writes.
REFUSAL_GAP: Final = 1.0
#: Refusals not worth an operator's attention: a missing record is a normal answer, a
#: 429 is flow control, and a store outage cannot record itself.
QUIET_REFUSALS: Final = frozenset({"not_found", "too_many_requests", "store_unavailable"})

Handler = Callable[[Request], Awaitable[Response]]


def _msgpack(message: p.Message) -> Response:
    return Response(200, p.encode(message), p.MEDIA_TYPE)


class TrackerApp:
    """The ASGI application.

    Args:
        store: Where state lives.
        admin_token: Bearer token for admin mutations; None refuses them all (403).
        clock: Wall clock in Unix seconds (tests inject a fake).
        metrics: Metrics to update (a fresh private registry by default).
        cluster_keys: When given, every ``/v1`` request must carry a valid
            ``X-Shoal-Auth`` signature (``tracker.auth``), or is refused with 401.
    """

    def __init__(
        self,
        store: Store,
        *,
        admin_token: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: TrackerMetrics | None = None,
        cluster_keys: ClusterKeys | None = None,
    ) -> None:
        self.store = store
        self._keys = cluster_keys
        self._replays = ReplayGuard()
        self.metrics = metrics or TrackerMetrics()
        self._clock = clock
        self._refused: dict[tuple[str, str], float] = {}
        self.admin = AdminApi(store, admin_token=admin_token, clock=clock)
        self._openapi = importlib.resources.files("tracker").joinpath("openapi.json").read_bytes()
        self._routes: dict[str, dict[str, Handler]] = {
            "/v1/announce": {"POST": self._announce},
            "/v1/leave": {"POST": self._leave},
            "/v1/lookup": {"POST": self._lookup},
            "/v1/pieces": {"POST": self._put_pieces},
            "/v1/pieces/query": {"POST": self._get_pieces},
            "/v1/tags": {"POST": self._put_tag},
            "/v1/tags/query": {"POST": self._get_tag},
            "/v1/lease": {"POST": self._lease},
            "/healthz": {"GET": self._healthz},
            "/metrics": {"GET": self._metrics},
            "/openapi.json": {"GET": self._openapi_json},
            "/": {"GET": self._status_page},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: HTTP requests and the lifespan protocol."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, receive)
        route, response = await self.handle(request)
        self.metrics.requests.labels(route, str(response.status)).inc()
        await send_response(send, response, close=request.body_unread())

    async def handle(self, request: Request) -> tuple[str, Response]:
        """Route and answer one request; returns the route template and the response."""
        route = "unmatched"
        try:
            route, handler = self._resolve(request)
            if self._keys is not None and route.startswith("/v1/"):
                signed = await self._authenticate(request)
                response = await handler(request)
                value = sign_response(
                    self._keys, request=signed, status=response.status, body=response.body
                )
                return route, replace(response, headers=(*response.headers, (HEADER, value)))
            return route, await handler(request)
        except TrackerError as exc:
            if route.startswith("/v1/"):
                await self._note_refusal(route, exc)
            return route, error_response(exc)
        except Exception:  # per-request boundary: log it, answer 500, keep serving
            LOGGER.exception("bug while serving %s %s", request.method, request.path)
            return route, json_response(500, {"error": "internal", "message": "internal error"})

    def _resolve(self, request: Request) -> tuple[str, Handler]:
        methods = self._routes.get(request.path)
        route = request.path
        if methods is None:
            route, methods = self.admin.match(request.path)
        handler = methods.get(request.method)
        if handler is None:
            raise MethodNotAllowed(f"{request.method} not allowed", allow=tuple(methods))
        return route, handler

    async def _authenticate(self, request: Request) -> SignedRequest:
        """Check the cluster signature over the whole body, then let the handler re-read it."""
        assert self._keys is not None
        body = await request.body(p.MAX_BODY)
        signed = verify_request(
            self._keys, request.headers.get(HEADER), method=request.method, path=request.path,
            body=body, now=self._clock(), replays=self._replays,
        )  # fmt: skip

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        request.receive = replay
        return signed

    async def _note_refusal(self, route: str, exc: TrackerError) -> None:
        """Put a /v1 refusal in the recent errors (rate-limited per kind and route)."""
        now = self._clock()
        key = (exc.code, route)
        if exc.code in QUIET_REFUSALS or now - self._refused.get(key, -REFUSAL_GAP) < REFUSAL_GAP:
            return
        if len(self._refused) > 256:  # codes x routes is small; this never grows past it
            self._refused.clear()
        self._refused[key] = now
        event = ErrorEvent(
            at=now, source="tracker", kind=exc.code, message=f"refused {route}: {exc.message}"
        )
        try:
            await self.store.note_errors([event])
        except StoreUnavailable:
            pass  # the refusal itself is answered; the record is best effort

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _decode(self, request: Request, cls: type[p.M]) -> p.M:
        if request.media_type() not in MSGPACK_TYPES:
            raise UnsupportedMediaType(f"send {p.MEDIA_TYPE} bodies to {request.path}")
        return p.decode(cls, await request.body(p.MAX_BODY))

    # --- peer protocol ------------------------------------------------------------------

    async def _announce(self, request: Request) -> Response:
        msg = await self._decode(request, p.Announce)
        with self.metrics.timed("announce"):
            reply = await self.store.announce(msg, self._clock())
        self.metrics.announces.inc()
        return _msgpack(reply)

    async def _leave(self, request: Request) -> Response:
        msg = await self._decode(request, p.Leave)
        with self.metrics.timed("leave"):
            await self.store.leave(msg, self._clock())
        self.metrics.leaves.inc()
        return _msgpack(p.Ack())

    async def _lookup(self, request: Request) -> Response:
        msg = await self._decode(request, p.Lookup)
        with self.metrics.timed("lookup"):
            reply = await self.store.lookup(msg, self._clock())
        self.metrics.lookups.inc()
        return _msgpack(reply)

    async def _put_pieces(self, request: Request) -> Response:
        msg = await self._decode(request, p.PieceHashes)
        with self.metrics.timed("put_pieces"):
            return _msgpack(await self.store.put_pieces(msg))

    async def _get_pieces(self, request: Request) -> Response:
        msg = await self._decode(request, p.PiecesQuery)
        with self.metrics.timed("get_pieces"):
            record = await self.store.get_pieces(msg.digest)
        if record is None:
            raise NotFound(f"no piece hashes for {msg.digest}")
        return _msgpack(record)

    async def _put_tag(self, request: Request) -> Response:
        msg = await self._decode(request, p.TagRecord)
        with self.metrics.timed("put_tag"):
            return _msgpack(p.TagPutReply(stored=await self.store.put_tag(msg)))

    async def _get_tag(self, request: Request) -> Response:
        msg = await self._decode(request, p.TagQuery)
        with self.metrics.timed("get_tag"):
            record = await self.store.get_tag(msg)
        if record is None:
            raise NotFound(f"no resolution for {msg.repository}:{msg.tag}")
        return _msgpack(record)

    async def _lease(self, request: Request) -> Response:
        msg = await self._decode(request, p.LeaseRequest)
        with self.metrics.timed("lease"):
            reply = await self.store.lease(msg, self._clock())
        outcome = "granted" if reply.granted else "capped" if reply.capped else "held"
        self.metrics.leases.labels(outcome).inc()
        return _msgpack(reply)

    # --- operations ---------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        with self.metrics.timed("ping"):
            await self.store.ping()
        return json_response(200, {"status": "ok", "store": self.store.kind})

    async def _metrics(self, request: Request) -> Response:
        now = self._clock()
        with self.metrics.timed("stats"):
            stats = await self.store.stats(now)
        with self.metrics.timed("transfers"):
            transfers = await self.store.transfers(now, limit=MAX_PAGE)
        after = STALL_INTERVALS * self.store.policy.announce_interval
        body = self.metrics.render(stats, stalled=count_stalled(transfers, now, after=after))
        return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")

    async def _openapi_json(self, request: Request) -> Response:
        return Response(200, self._openapi, "application/json")

    async def _status_page(self, request: Request) -> Response:
        now = self._clock()
        with self.metrics.timed("status_page"):
            page = await gather_page(
                self.store, now, rows=STATUS_ROWS, errors=STATUS_ERRORS, tags=STATUS_TAGS
            )
        return Response(200, render_status_page(page).encode(), "text/html; charset=utf-8")
