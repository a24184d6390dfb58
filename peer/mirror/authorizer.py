"""Answering origin registries' auth challenges: the trio/httpx half of :mod:`peer.mirror.auth`.

Theory of operation (reference: shared/reference/oci-pull-protocol.md §3.5, §4 E13–E14):

* Credentials are per *origin* (``scheme://host:port``), never per request. An
  :class:`Authorizer` remembers the last challenge each origin sent
  (:meth:`~Authorizer.on_unauthorized`) and answers it on every request to that origin
  (:meth:`~Authorizer.authorize`), so an ``Authorization`` header never follows a redirect
  to another host, and a second registry on the far side of a redirect gets its own token.
* Basic challenges are answered with the credentials only inside the registry's registrable
  domain; bearer tokens are fetched from the challenge's realm (anonymously when the realm
  is outside that domain, warned once per realm), one fetch per token key at a time, and
  cached until shortly before they expire.

:class:`~peer.mirror.upstream.Upstream` owns the request loop and the status mapping; this
module only decides which ``Authorization`` header a request carries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import httpx
import trio

from peer.mirror import auth
from peer.mirror.answers import aclose, drain, error_for, mapped, read_capped, redact

LOGGER = logging.getLogger(__name__)

#: Token responses are a few KiB (JWTs); this only stops a hostile realm.
MAX_TOKEN_SIZE: Final = 1 << 20


class Authorizer:
    """Per-origin challenges and the bearer tokens that answer them.

    Args:
        client: The httpx client token requests are sent with.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._challenges: dict[str, auth.Challenge] = {}  # origin -> last challenge it sent
        self._tokens = auth.TokenCache()
        self._token_locks: dict[auth.TokenRequest, trio.Lock] = {}
        self._withheld: set[str] = set()  # realms we refused credentials to (warned once)

    def on_unauthorized(
        self,
        origin: str,
        base: str,
        values: Sequence[str],
        key: auth.TokenRequest | None,
        creds: tuple[str, str] | None,
        repo: str,
    ) -> tuple[str, ...] | None:
        """``origin`` answered 401 with the ``WWW-Authenticate`` ``values``.

        Forgets the token ``key`` that was refused (if any) and, when the new challenge is
        one we can answer, remembers it. Returns the scopes to retry with, or None when the
        401 stands.
        """
        challenge = auth.pick_challenge(auth.parse_challenges(values))
        if key is not None:
            self._tokens.discard(key)
        answerable = challenge is not None and (
            challenge.scheme == "bearer"
            or (creds is not None and auth.may_send_credentials(origin, base))
        )
        if challenge is not None and answerable:
            self._challenges[origin] = challenge
            return auth.pull_scopes(challenge, repo)
        return None

    async def authorize(
        self, origin: str, base: str, scopes: Sequence[str], creds: tuple[str, str] | None
    ) -> tuple[dict[str, str], auth.TokenRequest | None]:
        """Headers answering ``origin``'s last challenge, and the token key used, if any."""
        challenge = self._challenges.get(origin)
        if challenge is None:
            return {}, None
        if challenge.scheme == "basic":
            if creds is None or not auth.may_send_credentials(origin, base):
                return {}, None
            return {"Authorization": auth.basic_authorization(creds)}, None
        realm = challenge.realm or ""
        if creds is not None and not auth.may_send_credentials(realm, base):
            if realm not in self._withheld:
                self._withheld.add(realm)
                LOGGER.warning("not sending credentials to realm %s outside %s", realm, base)
            creds = None
        key = auth.token_request(challenge, scopes, auth.credential_identity(creds))
        # One fetch per key at a time: a cold pull opens many layers at once.
        lock = self._token_locks.setdefault(key, trio.Lock())
        async with lock:
            token = self._tokens.get(key, now=trio.current_time())
            if token is None:
                token = await self._fetch_token(key, creds)
        if not lock.locked():  # nobody waiting (trio hands a released lock to the next waiter)
            self._token_locks.pop(key, None)
        return {"Authorization": f"Bearer {token}"}, key

    async def _fetch_token(self, key: auth.TokenRequest, creds: tuple[str, str] | None) -> str:
        headers = {"Authorization": auth.basic_authorization(creds)} if creds else {}
        request = self._client.build_request("GET", key.realm, params=key.query(), headers=headers)
        what = f"token from {redact(request.url)}"
        with mapped(what):
            response = await self._client.send(request, stream=True)
        if response.status_code != 200:
            raise error_for(response, await drain(response), hub_anonymous=False)
        try:
            body = await read_capped(response, MAX_TOKEN_SIZE, what)
        finally:
            await aclose(response)
        token = auth.parse_token_response(body, now=trio.current_time())
        self._tokens.put(key, token, now=trio.current_time())
        LOGGER.debug("fetched %s for %s", what, " ".join(key.scopes))
        return token.value
