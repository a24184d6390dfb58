"""The one error tree of the ``tracker`` package.

::

    TrackerError(Exception)              status_hint 500 (never answered on purpose)
    ├── BadRequest                       400  the request cannot be understood
    │   ├── BadMessage                   400  a peer-protocol body failed to decode
    │   └── UnsupportedVersion           400  a peer speaks a protocol version we do not
    ├── Unauthorized                     401  admin call without the right bearer token
    │   └── ClusterAuthFailed            401  /v1 request without a valid cluster signature
    ├── Forbidden                        403  admin calls disabled (no token configured)
    │   └── PeerBanned                   403  an operator banned this peer id
    ├── NotFound                         404  unknown route, peer, blob or record
    ├── MethodNotAllowed                 405  carries ``allow``
    ├── PeerConflict                     409  peer id in use by another live session
    ├── BodyTooLarge                     413  body over the route's cap (checked before parsing)
    ├── UnsupportedMediaType             415  wrong ``Content-Type``
    ├── TooManyRequests                  429  a peer announces faster than allowed
    ├── RegistryFull                     503  a global cap is reached; retry later
    ├── StoreUnavailable                 503  the Redis store cannot be reached
    └── ConfigError                      (CLI exit status 2) bad flag, env var or TOML key

Every class carries an h11-style ``status_hint`` and a short machine-readable ``code``;
the HTTP shell (``tracker.app``) renders any of them as ``{"error": code, "message": ...}``
with that status, and nothing else in the package knows about HTTP.
"""

from __future__ import annotations

from typing import ClassVar


class TrackerError(Exception):
    """Base of every error raised on purpose by the tracker package."""

    status_hint: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(TrackerError):
    """The request is malformed (bad query parameter, bad path segment): fix the caller."""

    status_hint = 400
    code = "bad_request"


class BadMessage(BadRequest):
    """A peer-protocol body is not a valid message (bad msgpack, wrong types, out of range).

    Raised by every ``tracker.protocol.decode`` failure, whatever the cause.
    """

    code = "bad_message"


class UnsupportedVersion(BadRequest):
    """The message's ``v`` field names a protocol version this tracker does not speak."""

    code = "unsupported_version"


class Unauthorized(TrackerError):
    """An admin mutation came without ``Authorization: Bearer <token>`` or with a wrong one."""

    status_hint = 401
    code = "unauthorized"
    #: The ``WWW-Authenticate`` challenge sent with the 401.
    challenge: ClassVar[str] = 'Bearer realm="shoal-tracker"'


class ClusterAuthFailed(Unauthorized):
    """A ``/v1`` request of the peer protocol lacks a valid ``X-Shoal-Auth`` signature
    (no header, wrong cluster secret, clock skew, replay): the sender is not a member of
    the cluster, or needs its clock or ``--cluster-secret`` fixed."""

    code = "cluster_auth"
    challenge = 'Shoal-HMAC realm="shoal-cluster"'


class Forbidden(TrackerError):
    """The caller may not do this at all (for example: no admin token is configured)."""

    status_hint = 403
    code = "forbidden"


class PeerBanned(Forbidden):
    """An operator banned this peer id; its announces are refused until the ban ends."""

    code = "banned"


class NotFound(TrackerError):
    """No such route, peer, blob, piece-hash record or tag record."""

    status_hint = 404
    code = "not_found"


class MethodNotAllowed(TrackerError):
    """The route exists but not for this method; ``allow`` lists the methods it takes."""

    status_hint = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class PeerConflict(TrackerError):
    """The peer id is held by another live session: a duplicate id or a forged one.

    The rightful peer keeps its id; the other must pick a new id or wait for the TTL.
    """

    status_hint = 409
    code = "peer_conflict"


class BodyTooLarge(TrackerError):
    """The request body is larger than the route accepts; nothing of it was parsed."""

    status_hint = 413
    code = "body_too_large"


class UnsupportedMediaType(TrackerError):
    """The body's ``Content-Type`` is not the one the route speaks."""

    status_hint = 415
    code = "unsupported_media_type"


class TooManyRequests(TrackerError):
    """A peer announced again sooner than the minimum gap; ``retry_after`` is in seconds."""

    status_hint = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistryFull(TrackerError):
    """A global cap (peers, holdings, leases) is reached: the caller should retry later."""

    status_hint = 503
    code = "registry_full"


class StoreUnavailable(TrackerError):
    """The shared store (Redis) cannot be reached or answered garbage; retry later."""

    status_hint = 503
    code = "store_unavailable"


class ConfigError(TrackerError):
    """A flag, ``SHOAL_*`` environment variable or TOML key has a bad value.

    Raised only while starting up; ``tracker.cli`` prints it and exits with status 2.
    """

    code = "config"
