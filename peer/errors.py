"""The one error tree of the ``peer`` package.

::

    PeerError(Exception)
    ├── RegistryError            an OCI error answered to a client (code + HTTP status)
    ├── UpstreamError            the origin registry failed us
    │   ├── UpstreamNotFound     404 (or Docker Hub's 401 after an anonymous token)
    │   ├── UpstreamDenied       401/403 we cannot get past
    │   ├── UpstreamRateLimited  429, carries ``retry_after``
    │   ├── UpstreamUnavailable  transport error, timeout or 5xx
    │   └── UpstreamProtocolError  the origin answered something we cannot use
    ├── IntegrityError           bytes do not match their digest or piece hash
    ├── CacheError               the disk cache cannot take or give a blob
    │   └── CacheFull            nothing more can be evicted to make room
    ├── ProtocolError            peer wire protocol (abstract)
    │   ├── LocalProtocolError   we tried something illegal: a bug
    │   └── RemoteProtocolError  the other side misbehaved: drop and penalise it
    ├── TrackerError
    │   ├── TrackerUnavailable   transport error or timeout: retry with backoff
    │   └── TrackerRejected      the tracker refused (carries ``status``)
    └── ConfigError              bad flag, env var or TOML key

Only the registry endpoint turns these into HTTP answers (see ``RegistryError.from_upstream``);
nothing above the upstream client knows httpx exists.
"""

from __future__ import annotations

from typing import Any


class PeerError(Exception):
    """Base of every error raised on purpose by the peer package."""


class RegistryError(PeerError):
    """An OCI distribution error for the client: ``{"errors": [{code, message, detail}]}``.

    Raised anywhere under the endpoint; the endpoint renders it with ``status``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class UpstreamError(PeerError):
    """The origin registry failed; subclasses say how. ``status`` is the origin's, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamNotFound(UpstreamError):
    """The origin does not have it (404, or Docker Hub's 401 for unknown repositories)."""


class UpstreamDenied(UpstreamError):
    """The origin refuses us even after the auth dance (401/403)."""


class UpstreamRateLimited(UpstreamError):
    """The origin said 429; ``retry_after`` is in seconds when it told us."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """Transport error, timeout or 5xx: the origin may come back; serve stale if we can."""


class UpstreamProtocolError(UpstreamError):
    """The origin answered something we cannot use (no digest, wrong length, bad JSON)."""


class IntegrityError(PeerError):
    """Bytes did not match their digest or piece hash: discard them, penalise the source."""


class CacheError(PeerError):
    """The on-disk cache could not store or read a blob."""


class CacheFull(CacheError):
    """Nothing more can be evicted to make room (every entry is in use or the quota is tiny)."""


class ProtocolError(PeerError):
    """Peer wire protocol violation. Abstract: raise a subclass."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The other peer broke the protocol: drop the link and penalise the peer."""


class TrackerError(PeerError):
    """Talking to the tracker failed."""


class TrackerUnavailable(TrackerError):
    """Transport error or timeout: back off and retry; keep serving through the origin."""


class TrackerRejected(TrackerError):
    """The tracker answered with an error status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(PeerError):
    """A flag, environment variable or TOML key has a bad value."""
