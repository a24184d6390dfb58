"""Private registries: content is served only to clients the origin would serve.

Theory of operation
-------------------
A registry the node has ``--upstream-credentials`` for is *private*: what the node
fetched with its own credentials, and what peers fetched with theirs, must not reach a
client that could not have pulled it from the origin itself (the leak of
spegel-org/spegel#167 and #1432). So before anything of a private registry is served —
from the cache, a download in flight, the peers, or the origin — :meth:`AccessCheck.check`
makes the client prove access:

1. No ``Authorization: Basic`` header: ``401 UNAUTHORIZED`` with
   ``WWW-Authenticate: Basic realm="shoal"``, so runtimes retry with the credentials they
   hold for this host (containerd's hosts.toml auth, a kubelet pull secret, podman's
   auth.json).
2. Otherwise the node asks the origin with *those* credentials: a ``HEAD`` of the very
   manifest or blob requested, in the same repository (``Upstream.check_access``, which
   does the Basic or token dance as a client would). 2xx: allowed. 401/403: ``401`` with
   the challenge again. 404: ``404``, as the origin said. The origin down or broken:
   ``503`` — the check fails closed, it never guesses.
3. Answers are cached per (client credentials, registry, repository, kind, reference):
   allowed for ``ttl`` (60 s), refused for ``negative_ttl`` (10 s). The key names the
   object, not just the repository: access to repository A must not open a blob of
   private repository B to whoever knows its digest, although the node may hold it.
   Credentials are keyed by a salted HMAC, so the cache never holds a password.

The base route ``/v2/`` answers ``401`` with the challenge to requests without credentials
(:meth:`AccessCheck.check_base`) as soon as any registry is private: clients of the
containers/image family (podman, skopeo, CRI-O) and dockerd decide from that ping whether
to send credentials at all. Their anonymous pulls go on as before: a client without
credentials carries on without them after the ping, as it does with any registry.

Registries without configured credentials are anonymous and behave as before. The
client's credentials go to the origin only, under the same registrable-domain rule as
the node's own (``auth.may_send_credentials``); they are never stored, logged, or used to
fetch content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import trio

from peer.errors import (
    RegistryError,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
)
from peer.httpserver import Request
from peer.mirror.names import Target, canonical_registry
from peer.mirror.upstream import Upstream

LOGGER = logging.getLogger(__name__)

__all__ = ["CHALLENGE", "AccessCache", "AccessCheck", "Refusal", "parse_basic"]

#: What a client without credentials is told (RFC 7617).
CHALLENGE: Final = 'Basic realm="shoal"'
#: How long an allowed answer is reused: a revoked client keeps access at most this long.
DEFAULT_TTL: Final = 60.0
#: How long a refusal is reused: spares the origin a retry storm from one bad client.
DEFAULT_NEGATIVE_TTL: Final = 10.0
#: Answers kept at once (about 200 bytes each): thousands of clients × objects in a pull.
MAX_ENTRIES: Final = 16_384
#: Longest Authorization value we look at; real Basic credentials are far shorter.
MAX_AUTHORIZATION: Final = 4096

Key = tuple[bytes, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A remembered refusal; :meth:`error` makes a fresh exception for each request."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def error(self) -> RegistryError:
        return RegistryError(
            self.code, self.message, status=self.status, headers=dict(self.headers)
        )


def parse_basic(value: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); None for anything else."""
    if not value or len(value) > MAX_AUTHORIZATION:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep and user else None


class AccessCache:
    """Access answers with expiry; time is passed in (``now``), nothing here reads a clock."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._answers: dict[Key, tuple[float, Refusal | None]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: Key, *, now: float) -> tuple[bool, Refusal | None]:
        """(known, refusal): (False, None) unknown, (True, None) allowed, (True, err) refused."""
        entry = self._answers.get(key)
        if entry is None or entry[0] <= now:
            self._answers.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: Key, refusal: Refusal | None, *, now: float) -> None:
        """Remember an answer; the oldest goes when full (dict order is insertion order)."""
        self._answers.pop(key, None)
        if len(self._answers) >= self._max:
            del self._answers[next(iter(self._answers))]
        ttl = self._ttl if refusal is None else self._negative_ttl
        self._answers[key] = (now + ttl, refusal)


def _unauthorized(message: str) -> Refusal:
    return Refusal(401, "UNAUTHORIZED", message, {"www-authenticate": CHALLENGE})


class AccessCheck:
    """The node's gate for private registries (see the module docstring).

    Args:
        upstream: The origin client (its ``check_access`` asks with a client's credentials).
        private: Registries whose content needs a client's proof of access.
        cache: Remembered answers (a default :class:`AccessCache` if omitted).
        clock: Seconds, for the cache (trio's clock, so tests can use virtual time).
    """

    def __init__(
        self,
        upstream: Upstream,
        private: Iterable[str],
        *,
        cache: AccessCache | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._upstream = upstream
        self._private = frozenset(canonical_registry(r) for r in private)
        self._cache = cache or AccessCache()
        self._clock = clock
        self._salt = secrets.token_bytes(32)  # per process: keys are useless elsewhere

    def is_private(self, registry: str) -> bool:
        return canonical_registry(registry) in self._private

    def check_base(self, request: Request) -> None:
        """``/v2/``: challenge a client that sent no credentials (see the module docstring).

        Raises:
            RegistryError: 401 with ``WWW-Authenticate: Basic realm="shoal"``.
        """
        if self._private and parse_basic(request.header("authorization")) is None:
            raise _unauthorized("this node serves private registries: send credentials").error()

    async def check(self, request: Request, target: Target, kind: str, reference: str) -> None:
        """Return if the client may read ``<kind>/<reference>`` of ``target``; else raise.

        Raises:
            RegistryError: 401 (no or refused credentials), 404 (the origin does not show
                it to them), 503 (the origin cannot answer now).
        """
        if not self.is_private(target.registry):
            return
        credentials = parse_basic(request.header("authorization"))
        if credentials is None:
            raise _unauthorized(
                f"{target.registry} is private: send your credentials for it"
            ).error()
        user, password = credentials
        identity = hmac.new(self._salt, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        key: Key = (identity, target.registry, target.repository, kind, reference)
        known, refusal = self._cache.get(key, now=self._clock())
        if not known:
            refusal = await self._ask_origin(request, target, kind, reference, credentials)
            if refusal is None or refusal.status in (401, 403, 404):  # not outages
                self._cache.put(key, refusal, now=self._clock())
        if refusal is not None:
            raise refusal.error()

    async def _ask_origin(
        self,
        request: Request,
        target: Target,
        kind: str,
        reference: str,
        credentials: tuple[str, str],
    ) -> Refusal | None:
        try:
            await self._upstream.check_access(
                target.registry, target.repository, kind, reference, credentials,
                accept=request.header_all("accept"),
            )  # fmt: skip
        except UpstreamDenied:
            LOGGER.info("origin refused a client's credentials for %s", target.image)
            return _unauthorized(f"the origin refused these credentials for {target.image}")
        except UpstreamNotFound:
            code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
            return Refusal(404, code, f"{kind[:-1]} unknown to the origin registry")
        except UpstreamError as exc:
            LOGGER.warning("cannot check access to %s: %s", target.image, exc)
            return Refusal(
                503,
                "UNAVAILABLE",
                f"{target.registry} is private and the origin cannot confirm access now",
                {"retry-after": "5"},
            )
        return None
