"""Cluster authentication, sans-IO: the shared secret, and signed tracker requests.

Theory of operation
-------------------
Every node and tracker of a cluster is given the same ``--cluster-secret``. Nothing
ever sends it; each side proves it knows it with HMAC-SHA256 (RFC 2104) over a message
that names what is being proved, so a MAC made for one purpose is useless for another:

* **Peer links** (``peer.mesh.wire``): each side MACs both handshakes' peer ids and
  fresh nonces, its own first (``LINK_LABEL``).
* **Tracker requests** (this module): the node MACs the method, the route path, a Unix
  timestamp, a random nonce and the SHA-256 of the body (``REQUEST_LABEL``), and sends
  ``X-Shoal-Auth: t=<unix>,n=<nonce hex>,mac=<hex>``. The tracker refuses a request whose
  timestamp is more than ``MAX_SKEW`` seconds off its own clock, whose MAC is wrong, or
  whose MAC it has already seen (a replay) within that window.
* **Tracker answers**: the tracker signs every 2xx answer to a signed request with
  ``X-Shoal-Auth: mac=<hex>`` over the request's MAC, the status and the SHA-256 of the
  body (``RESPONSE_LABEL``). A node refuses unsigned answers, so an impostor tracker
  (say, one advertised over mDNS on the LAN) cannot feed it peer addresses, piece hashes
  or tag resolutions.

Rules:

1. MAC inputs are framed unambiguously: the label, then every part as a 4-byte
   big-endian length and its bytes (:func:`frame`), so no two different inputs collide.
2. **Rotation**: ``--cluster-secret`` may hold several secrets separated by commas. The
   first signs; every one is accepted when verifying. Roll ``old,new`` → ``new,old`` →
   ``new`` across the cluster and no link or announce fails on the way.
3. Comparisons are constant-time (``hmac.compare_digest``), and a verification tries
   every accepted secret without stopping at the first match.
4. Secrets never appear in a ``repr``, a log line or an error message.

Nothing here reads a clock or does I/O: callers pass ``now`` and the nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from tracker.errors import ClusterAuthFailed

__all__ = [
    "HEADER",
    "LINK_LABEL",
    "MAX_SKEW",
    "MIN_SECRET_BYTES",
    "REQUEST_LABEL",
    "RESPONSE_LABEL",
    "ClusterKeys",
    "ReplayGuard",
    "SignedRequest",
    "frame",
    "parse_header",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
]

#: The request header carrying the signature (lower-case, as ASGI delivers headers).
HEADER: Final = "x-shoal-auth"
#: Domain separation: a MAC over a link handshake can never pass as a request MAC.
LINK_LABEL: Final = b"shoal-link-auth-v1"
REQUEST_LABEL: Final = b"shoal-tracker-request-v1"
RESPONSE_LABEL: Final = b"shoal-tracker-response-v1"
#: Largest clock difference accepted between a node and the tracker. NTP keeps hosts
#: within milliseconds; a minute tolerates a node whose clock drifted without letting a
#: captured request be replayed for long (AWS SigV4 allows 5 minutes, Kerberos 5).
MAX_SKEW: Final = 60.0
#: 128 bits: below that a shared secret can be guessed offline from one captured MAC.
MIN_SECRET_BYTES: Final = 16
#: MACs remembered against replay; beyond it new ones are not recorded (see ReplayGuard).
MAX_REMEMBERED: Final = 1 << 18
_LEN: Final = struct.Struct(">I")
_HEX: Final = re.compile(r"[0-9a-f]+")
_FIELDS: Final = frozenset({"t", "n", "mac"})


def frame(label: bytes, *parts: bytes) -> bytes:
    """The MAC input: ``label`` then each part as length (u32, big-endian) and bytes."""
    out = bytearray(label)
    for part in parts:
        out += _LEN.pack(len(part))
        out += part
    return bytes(out)


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The cluster secret(s): the first signs, all of them verify.

    Raises:
        ValueError: No secret, or one shorter than :data:`MIN_SECRET_BYTES`.
    """

    secrets: tuple[bytes, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("no cluster secret given")
        for secret in self.secrets:
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"a cluster secret must have at least {MIN_SECRET_BYTES} bytes "
                    "(use `openssl rand -hex 32`)"
                )

    @classmethod
    def parse(cls, text: str) -> ClusterKeys:
        """``"new"`` or ``"new,old"`` (comma-separated, surrounding spaces ignored)."""
        return cls(tuple(s.strip().encode() for s in text.split(",") if s.strip()))

    def __repr__(self) -> str:
        return f"ClusterKeys(<{len(self.secrets)} secret(s)>)"

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` with the signing (first) secret."""
        return hmac.new(self.secrets[0], message, hashlib.sha256).digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the HMAC of ``message`` under any accepted secret."""
        ok = False
        for secret in self.secrets:  # no early exit: the time taken says nothing
            expected = hmac.new(secret, message, hashlib.sha256).digest()
            ok |= hmac.compare_digest(expected, mac)
        return ok


# ---- tracker requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed ``X-Shoal-Auth`` header."""

    timestamp: int
    nonce: bytes
    mac: bytes

    def header(self) -> str:
        """The header value: ``t=<unix>,n=<nonce hex>,mac=<hex>``."""
        return f"t={self.timestamp},n={self.nonce.hex()},mac={self.mac.hex()}"


def _request_message(method: str, path: str, timestamp: int, nonce: bytes, body: bytes) -> bytes:
    return frame(
        REQUEST_LABEL,
        method.upper().encode("ascii"),
        path.encode("utf-8"),
        str(timestamp).encode("ascii"),
        nonce,
        hashlib.sha256(body).digest(),
    )


def sign_request(
    keys: ClusterKeys, *, method: str, path: str, body: bytes, now: float, nonce: bytes
) -> SignedRequest:
    """The signature of one request (``.header()`` is the ``X-Shoal-Auth`` value).

    Args:
        keys: The cluster secret(s).
        method: HTTP method.
        path: The route path the tracker sees (``/v1/announce``), without any prefix of
            the tracker's base URL and without query.
        body: The exact body bytes sent.
        now: Unix time.
        nonce: Fresh random bytes (16 are plenty), so two identical requests in the same
            second differ and neither looks like a replay of the other.
    """
    timestamp = int(now)
    mac = keys.mac(_request_message(method, path, timestamp, nonce, body))
    return SignedRequest(timestamp, nonce, mac)


def parse_header(value: str | None) -> SignedRequest:
    """Parse ``t=<unix>,n=<hex>,mac=<hex>``.

    Raises:
        ClusterAuthFailed: Missing or malformed.
    """
    if not value:
        raise ClusterAuthFailed("this tracker needs the cluster secret: no X-Shoal-Auth header")
    items: dict[str, str] = {}
    for item in value.split(","):
        key, sep, text = item.strip().partition("=")
        if not sep or key not in _FIELDS or key in items:
            raise ClusterAuthFailed("malformed X-Shoal-Auth header")
        items[key] = text.strip()
    if set(items) != _FIELDS:
        raise ClusterAuthFailed("malformed X-Shoal-Auth header")
    t, n, mac = items["t"], items["n"], items["mac"]
    if not (t.isascii() and t.isdigit() and len(t) <= 12):
        raise ClusterAuthFailed("malformed X-Shoal-Auth timestamp")
    if not (_HEX.fullmatch(n) and 16 <= len(n) <= 64 and len(n) % 2 == 0):
        raise ClusterAuthFailed("malformed X-Shoal-Auth nonce")
    if not (_HEX.fullmatch(mac) and len(mac) == 64):
        raise ClusterAuthFailed("malformed X-Shoal-Auth mac")
    return SignedRequest(int(t), bytes.fromhex(n), bytes.fromhex(mac))


def verify_request(
    keys: ClusterKeys,
    header: str | None,
    *,
    method: str,
    path: str,
    body: bytes,
    now: float,
    replays: ReplayGuard | None = None,
) -> SignedRequest:
    """Check one request's signature; return it when it is good.

    Raises:
        ClusterAuthFailed: Missing, malformed, stale or future timestamp, wrong MAC, or a
            replay (when ``replays`` is given). The message never includes the secret or
            the expected MAC.
    """
    signed = parse_header(header)
    skew = signed.timestamp - now
    if abs(skew) > MAX_SKEW:
        raise ClusterAuthFailed(
            f"X-Shoal-Auth timestamp is {skew:+.0f}s off the tracker's clock "
            f"(more than {MAX_SKEW:g}s): check NTP on the node"
        )
    message = _request_message(method, path, signed.timestamp, signed.nonce, body)
    if not keys.verify(message, signed.mac):
        raise ClusterAuthFailed("wrong cluster MAC: the node has another --cluster-secret")
    if replays is not None and not replays.first_time(signed.mac, signed.timestamp, now=now):
        raise ClusterAuthFailed("replayed request (this signature was already used)")
    return signed


def _response_message(request_mac: bytes, status: int, body: bytes) -> bytes:
    return frame(
        RESPONSE_LABEL, request_mac, str(status).encode("ascii"), hashlib.sha256(body).digest()
    )


def sign_response(keys: ClusterKeys, *, request: SignedRequest, status: int, body: bytes) -> str:
    """The ``X-Shoal-Auth`` value of the tracker's answer to ``request``."""
    return f"mac={keys.mac(_response_message(request.mac, status, body)).hex()}"


def verify_response(
    keys: ClusterKeys, header: str | None, *, request: SignedRequest, status: int, body: bytes
) -> bool:
    """Whether the tracker's answer to ``request`` carries a good signature."""
    if not header or not header.startswith("mac="):
        return False
    text = header[4:].strip()
    if not (_HEX.fullmatch(text) and len(text) == 64):
        return False
    return keys.verify(_response_message(request.mac, status, body), bytes.fromhex(text))


class ReplayGuard:
    """MACs of accepted requests, remembered until their timestamp leaves the window.

    Buckets by timestamp second make expiry O(1) per bucket. Past ``max_entries`` new MACs
    are accepted but not remembered (replay protection degrades under an extreme load
    rather than refusing genuine requests); ``saturated`` tells when that happened.
    Per process: several trackers behind one Service each keep their own.
    """

    def __init__(self, *, window: float = MAX_SKEW, max_entries: int = MAX_REMEMBERED) -> None:
        self._window = window
        self._max = max_entries
        self._buckets: dict[int, set[bytes]] = {}
        self._count = 0
        self.saturated = False

    def __len__(self) -> int:
        return self._count

    def first_time(self, mac: bytes, timestamp: int, *, now: float) -> bool:
        """Record ``mac``; False if it was seen before (a replay)."""
        self._expire(now)
        bucket = self._buckets.get(timestamp)
        key = mac[:16]  # 128 bits are as unique as 256 here, at half the memory
        if bucket is not None and key in bucket:
            return False
        if self._count >= self._max:
            self.saturated = True
            return True
        self._buckets.setdefault(timestamp, set()).add(key)
        self._count += 1
        return True

    def _expire(self, now: float) -> None:
        oldest = now - self._window - 1
        for stamp in _stale(self._buckets, oldest):
            self._count -= len(self._buckets.pop(stamp))


def _stale(buckets: dict[int, set[bytes]], oldest: float) -> Iterable[int]:
    return [stamp for stamp in buckets if stamp < oldest]
