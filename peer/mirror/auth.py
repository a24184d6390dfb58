"""Registry authentication, sans-IO: challenges, token requests, a token cache, realm policy.

Theory of operation (distribution ``docs/content/spec/auth/token.md``, RFC 9110 §11):

1. A registry answers ``401`` with one or more ``WWW-Authenticate`` challenges, e.g.
   ``Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
   scope="repository:library/alpine:pull"``. Several challenges may share one header line
   and quoted strings may contain commas, so :func:`parse_challenges` is a real tokenizer,
   never a ``split(",")``.
2. For ``Bearer`` we ``GET <realm>?service=…&scope=…`` (:class:`TokenRequest`), anonymously
   or with HTTP Basic credentials, and get JSON with ``token`` or ``access_token``
   (equivalent) and ``expires_in`` (default 60 s, never less): :func:`parse_token_response`.
3. Tokens are reused until shortly before expiry: :class:`TokenCache`, keyed by the whole
   :class:`TokenRequest` (realm, service, scopes, credential identity) so a token is never
   handed to a request it was not minted for. Time is passed in as ``now``; nothing here
   reads a clock or touches the network.
4. Credentials are only sent to hosts inside the upstream's registrable domain
   (:func:`may_send_credentials`), as distribution's proxy does since 2026 (``proxyauth.go``
   ``realmAllowed``): a hostile or compromised registry must not be able to point us at a
   realm that harvests our passwords.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from peer.errors import UpstreamProtocolError

#: RFC 9110 ``tchar``: the characters of a ``token`` (auth-scheme, parameter names, values).
_TCHAR: Final = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
#: RFC 9110 ``token68`` characters (before the trailing ``=`` padding).
_TOKEN68: Final = frozenset("-._~+/" + string.ascii_letters + string.digits)
_OWS: Final = frozenset(" \t")

#: token.md: "If omitted … the default of 60 seconds". We also never trust less than that.
DEFAULT_EXPIRES_IN: Final = 60.0
#: Stop using a token this many seconds before it expires, so it cannot lapse in flight.
EXPIRY_MARGIN: Final = 5.0


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge.

    Attributes:
        scheme: Auth scheme, lower-cased (``"bearer"``, ``"basic"``, …).
        params: Auth parameters; names lower-cased, values unquoted.
        token68: The ``token68`` form some schemes use instead of parameters.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter, if any."""
        return self.params.get("realm")


class _Scanner:
    """A cursor over one header value; every failure names the offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"malformed WWW-Authenticate at offset {self.pos} ({what}): {self.text!r}"
        )

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: frozenset[str]) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def run(self, chars: frozenset[str]) -> str:
        start = self.pos
        self.skip(chars)
        return self.text[start : self.pos]

    def quoted(self) -> str:
        """Read a ``quoted-string`` (cursor on the opening quote), resolving ``\\`` escapes."""
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                if self.pos >= len(self.text):
                    break
                ch = self.text[self.pos]
                self.pos += 1
            out.append(ch)
        raise self.fail("unterminated quoted-string")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse every challenge in the given ``WWW-Authenticate`` header values.

    Args:
        values: The header values, one per header line (each may hold several challenges).

    Returns:
        The challenges in order. Empty values give an empty list.

    Raises:
        UpstreamProtocolError: A value is not valid RFC 9110 challenge syntax.
    """
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_header(_Scanner(value)))
    return out


def _parse_header(s: _Scanner) -> list[Challenge]:
    challenges: list[Challenge] = []
    while True:
        s.skip(_OWS | {","})  # empty list elements are allowed (RFC 9110 §5.6.1)
        if not s.peek():
            return challenges
        scheme = s.run(_TCHAR)
        if not scheme:
            raise s.fail("expected an auth-scheme")
        if s.peek() not in {"", ",", " ", "\t"}:
            raise s.fail("auth-scheme must be followed by a space")
        s.skip(_OWS)
        mark = s.pos
        token68 = s.run(_TOKEN68) + s.run(frozenset("="))
        s.skip(_OWS)
        if token68 and s.peek() in {"", ","}:
            challenges.append(Challenge(scheme.lower(), {}, token68))
            continue
        s.pos = mark
        challenges.append(Challenge(scheme.lower(), _parse_params(s)))


def _parse_params(s: _Scanner) -> dict[str, str]:
    params: dict[str, str] = {}
    while True:
        mark = s.pos
        if params:  # after a parameter: end, or "," then a parameter or the next challenge
            if s.peek() != ",":
                if not s.peek():
                    return params
                raise s.fail("expected ',' between parameters")
            s.skip(_OWS | {","})
        name = s.run(_TCHAR)
        s.skip(_OWS)
        if not name or s.peek() != "=":
            s.pos = mark  # not a parameter: the next challenge (or the end) starts here
            return params
        s.pos += 1
        s.skip(_OWS)
        if s.peek() == '"':
            value = s.quoted()
        elif not (value := s.run(_TCHAR)):
            raise s.fail(f"parameter {name!r} has no value")
        if name.lower() in params:
            raise s.fail(f"parameter {name!r} repeated")
        params[name.lower()] = value
        s.skip(_OWS)


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """Choose the challenge to answer: ``Bearer`` (with a realm) over ``Basic``, else None."""
    usable = [c for c in challenges if c.scheme == "basic" or (c.scheme == "bearer" and c.realm)]
    usable.sort(key=lambda c: c.scheme != "bearer")
    return usable[0] if usable else None


def pull_scopes(challenge: Challenge, repo: str) -> tuple[str, ...]:
    """Scopes to request: pull on ``repo`` plus the challenge's own scopes, reduced to pull.

    The challenge's scope matters after a redirect to another registry (E14), whose
    repository name may differ from ours. We only ever pull, and token servers grant the
    intersection of what is asked and what is allowed, so ``pull,push`` becomes ``pull``.
    """
    scopes = {f"repository:{repo}:pull"}
    for scope in challenge.params.get("scope", "").split():
        kind, _, rest = scope.partition(":")
        name, _, _actions = rest.rpartition(":")  # names may hold ':' (host:port)
        scopes.add(f"{kind}:{name}:pull" if kind == "repository" and name else scope)
    return tuple(sorted(scopes))


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A request to a token endpoint; also the token cache key.

    Attributes:
        realm: Token endpoint URL from the challenge.
        service: ``service`` parameter from the challenge, if any.
        scopes: Sorted scopes, each sent as its own ``scope=`` query parameter.
        identity: :func:`credential_identity` of the credentials used ("" = anonymous).
    """

    realm: str
    service: str | None
    scopes: tuple[str, ...]
    identity: str = ""

    def query(self) -> tuple[tuple[str, str], ...]:
        """Query parameters for ``GET <realm>``."""
        service = (("service", self.service),) if self.service is not None else ()
        return service + tuple(("scope", scope) for scope in self.scopes)


def token_request(challenge: Challenge, scopes: Iterable[str], identity: str = "") -> TokenRequest:
    """Build the token request answering a Bearer challenge.

    Raises:
        UpstreamProtocolError: The realm is missing or not an http(s) URL.
    """
    realm = challenge.realm
    if not realm or urlsplit(realm).scheme not in {"http", "https"} or not urlsplit(realm).netloc:
        raise UpstreamProtocolError(f"Bearer challenge has an unusable realm: {realm!r}")
    return TokenRequest(
        realm, challenge.params.get("service"), tuple(sorted(set(scopes))), identity
    )


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and the time (same clock as ``now``) at which it expires."""

    value: str
    expires_at: float


def parse_token_response(body: bytes, *, now: float) -> Token:
    """Parse a token endpoint's JSON answer.

    ``access_token`` wins over ``token`` when both are present, as in distribution's client
    (the spec calls them equivalent). ``expires_in`` below 60 s or missing means 60 s.

    Raises:
        UpstreamProtocolError: Not JSON, not an object, or no non-empty token.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UpstreamProtocolError(f"token response is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UpstreamProtocolError("token response is not a JSON object")
    value = doc.get("access_token") or doc.get("token")
    if not isinstance(value, str) or not value:
        raise UpstreamProtocolError("token response has neither 'token' nor 'access_token'")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        expires_in = DEFAULT_EXPIRES_IN
    if not math.isfinite(expires_in) or expires_in < DEFAULT_EXPIRES_IN:
        expires_in = DEFAULT_EXPIRES_IN
    return Token(value, now + float(expires_in))


class TokenCache:
    """Bearer tokens by :class:`TokenRequest`, with explicit time.

    Args:
        max_entries: Bound on cached tokens (one per realm × scope set × identity; a node
            pulling from a few registries uses dozens). When full, expired entries go first,
            then the one expiring soonest.
    """

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._tokens: dict[TokenRequest, Token] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, key: TokenRequest, *, now: float) -> str | None:
        """The cached token for ``key`` if it is still good ``EXPIRY_MARGIN`` from ``now``."""
        token = self._tokens.get(key)
        if token is None:
            return None
        if now >= token.expires_at - EXPIRY_MARGIN:
            del self._tokens[key]
            return None
        return token.value

    def put(self, key: TokenRequest, token: Token, *, now: float) -> None:
        """Store ``token`` for ``key``, evicting if the cache is full."""
        if key not in self._tokens and len(self._tokens) >= self._max_entries:
            for stale in [k for k, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[stale]
            if len(self._tokens) >= self._max_entries:
                del self._tokens[min(self._tokens, key=lambda k: self._tokens[k].expires_at)]
        self._tokens[key] = token

    def discard(self, key: TokenRequest) -> None:
        """Forget the token for ``key`` (the registry rejected it)."""
        self._tokens.pop(key, None)


def credential_identity(credentials: tuple[str, str] | None) -> str:
    """A cache-key identity for credentials: "" for anonymous, else user plus a hash.

    The hash (of user and password) makes a changed password miss tokens minted for the
    old one, without keeping the password itself in the key.
    """
    if credentials is None:
        return ""
    user, password = credentials
    digest = hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()[:16]
    return f"{user}#{digest}"


def basic_authorization(credentials: tuple[str, str]) -> str:
    """The ``Authorization`` header value for HTTP Basic (RFC 7617, UTF-8)."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def registrable_domain(host: str) -> str:
    """Approximate a host's registrable domain: its last two labels.

    IP addresses, ``localhost`` and single-label names are their own domain. This is not the
    Public Suffix List: ``registry.example.co.uk`` gives ``co.uk``, which errs towards
    trusting a sibling under the same public suffix. Good enough for the registries we meet
    (``registry-1.docker.io``/``auth.docker.io``, ``ghcr.io``, ``*.amazonaws.com``).
    """
    host = host.lower().rstrip(".").strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        return ".".join(labels[-2:])
    return host


def may_send_credentials(target_url: str, upstream_url: str) -> bool:
    """Whether credentials configured for ``upstream_url`` may be sent to ``target_url``.

    Allowed only when the target's host is in the upstream's registrable domain and the
    target is https (or plain http when the upstream itself is plain http, e.g. a lab
    registry on loopback: the credentials go in clear there anyway).
    """
    target, upstream = urlsplit(target_url), urlsplit(upstream_url)
    if not target.hostname or not upstream.hostname:
        return False
    if target.scheme != "https" and not (target.scheme == upstream.scheme == "http"):
        return False
    return registrable_domain(target.hostname) == registrable_domain(upstream.hostname)
