"""Pure tables for peer.mirror.auth: challenges, token requests and responses, cache, realms."""

from __future__ import annotations

import pytest

from peer.errors import UpstreamProtocolError
from peer.mirror.auth import (
    DEFAULT_EXPIRES_IN,
    EXPIRY_MARGIN,
    Challenge,
    Token,
    TokenCache,
    TokenRequest,
    basic_authorization,
    credential_identity,
    may_send_credentials,
    parse_challenges,
    parse_token_response,
    pick_challenge,
    pull_scopes,
    registrable_domain,
    token_request,
)

HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:samalba/my-app:pull,push"'
)

CHALLENGES: list[tuple[list[str], list[Challenge]]] = [
    # token.md's example: the comma inside the quoted scope must not split anything
    (
        [HUB],
        [
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:samalba/my-app:pull,push",
                },
            )
        ],
    ),
    # two challenges in one header, the first with no parameters at all
    (
        ['Basic, Bearer realm="r"'],
        [Challenge("basic", {}), Challenge("bearer", {"realm": "r"})],
    ),
    # RFC 9110 §11.6.1's example: escapes, a token value, a second challenge after a param
    (
        ['Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'],
        [
            Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
            Challenge("basic", {"realm": "simple"}),
        ],
    ),
    # several header lines; scheme and parameter names are case-insensitive
    (
        ['BASIC Realm="a"', 'bearer REALM="b",Service=svc'],
        [Challenge("basic", {"realm": "a"}), Challenge("bearer", {"realm": "b", "service": "svc"})],
    ),
    # token68 form, then a parameter challenge
    (
        ["Negotiate YWJj==, Basic realm=x"],
        [Challenge("negotiate", {}, "YWJj=="), Challenge("basic", {"realm": "x"})],
    ),
    # bad whitespace around '=' and ',' (RFC 9110 BWS/OWS), empty list elements, empty value
    (
        [' ,Bearer realm = "r" ,  service="",, ,'],
        [Challenge("bearer", {"realm": "r", "service": ""})],
    ),
    # "realm=" alone is a valid token68 (RFC 9110 §11.2), not an empty parameter
    (["Bearer realm="], [Challenge("bearer", {}, "realm=")]),
    ([""], []),
    ([" , ,"], []),
    ([], []),
]


@pytest.mark.parametrize(("values", "expected"), CHALLENGES)
def test_parse_challenges(values: list[str], expected: list[Challenge]) -> None:
    assert parse_challenges(values) == expected


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('Bearer realm="https://x', "unterminated"),
        ('Bearer realm="a\\', "unterminated"),
        ("Bearer service=s, realm=", "no value"),
        ('Bearer realm="a", service= ,x=y', "no value"),
        ("Bearer realm=,service=s", "space"),  # token68 "realm=", then "service=s" as a scheme
        ('Bearer realm="a" service="b"', "expected ','"),
        ('Bearer realm="a", REALM="b"', "repeated"),
        ("=oops", "auth-scheme"),
        ('"Bearer"', "auth-scheme"),
        ("Bearer/x realm=a", "space"),
    ],
)
def test_parse_challenges_rejects_garbage(value: str, complaint: str) -> None:
    with pytest.raises(UpstreamProtocolError, match=complaint):
        parse_challenges([value])


@pytest.mark.parametrize(
    ("challenges", "chosen"),
    [
        ([Challenge("basic", {"realm": "a"}), Challenge("bearer", {"realm": "r"})], "bearer"),
        ([Challenge("bearer", {}), Challenge("basic", {})], "basic"),  # Bearer needs a realm
        ([Challenge("negotiate", {}, "abc")], None),
        ([], None),
    ],
)
def test_pick_challenge(challenges: list[Challenge], chosen: str | None) -> None:
    picked = pick_challenge(challenges)
    assert (picked.scheme if picked else None) == chosen


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (None, ("repository:library/alpine:pull",)),
        ("repository:library/alpine:pull", ("repository:library/alpine:pull",)),
        (
            "repository:samalba/my-app:pull,push",
            ("repository:library/alpine:pull", "repository:samalba/my-app:pull"),
        ),
        (
            "repository:localhost:5000/x:push registry:catalog:*",
            (
                "registry:catalog:*",
                "repository:library/alpine:pull",
                "repository:localhost:5000/x:pull",
            ),
        ),
    ],
)
def test_pull_scopes(scope: str | None, expected: tuple[str, ...]) -> None:
    params = {"realm": "r"} | ({"scope": scope} if scope else {})
    assert pull_scopes(Challenge("bearer", params), "library/alpine") == expected


def test_token_request_query_and_key() -> None:
    challenge = Challenge("bearer", {"realm": "https://a.example/token", "service": "svc"})
    request = token_request(
        challenge, ["repository:b:pull", "repository:a:pull", "repository:b:pull"]
    )
    assert request == TokenRequest(
        "https://a.example/token", "svc", ("repository:a:pull", "repository:b:pull"), ""
    )
    assert request.query() == (
        ("service", "svc"),
        ("scope", "repository:a:pull"),
        ("scope", "repository:b:pull"),
    )
    no_service = token_request(Challenge("bearer", {"realm": "http://a/t"}), ["s"], "id")
    assert no_service.query() == (("scope", "s"),)
    assert no_service.identity == "id"


@pytest.mark.parametrize("realm", [None, "", "/token", "ftp://a.example/token", "https://"])
def test_token_request_refuses_unusable_realms(realm: str | None) -> None:
    params = {"realm": realm} if realm is not None else {}
    with pytest.raises(UpstreamProtocolError, match="realm"):
        token_request(Challenge("bearer", params), ["s"])


NOW = 1000.0


@pytest.mark.parametrize(
    ("body", "value", "expires_at"),
    [
        (b'{"token": "t"}', "t", NOW + 60),
        (b'{"access_token": "a"}', "a", NOW + 60),
        (b'{"token": "t", "access_token": "a"}', "a", NOW + 60),
        (b'{"token": "", "access_token": "a"}', "a", NOW + 60),
        (b'{"token": "t", "expires_in": 300}', "t", NOW + 300),
        (b'{"token": "t", "expires_in": 90.5}', "t", NOW + 90.5),
        (b'{"token": "t", "expires_in": 10}', "t", NOW + 60),  # never below 60
        (b'{"token": "t", "expires_in": -5}', "t", NOW + 60),
        (b'{"token": "t", "expires_in": "300"}', "t", NOW + 60),
        (b'{"token": "t", "expires_in": true}', "t", NOW + 60),
        (b'{"token": "t", "expires_in": Infinity}', "t", NOW + 60),
        (b'{"token": "t", "expires_in": null, "issued_at": "2026-01-01T00:00:00Z"}', "t", NOW + 60),
    ],
)
def test_parse_token_response(body: bytes, value: str, expires_at: float) -> None:
    assert parse_token_response(body, now=NOW) == Token(value, expires_at)


@pytest.mark.parametrize(
    "body", [b"", b"<html>", b"\xff\xfe", b"[]", b"{}", b'{"token": ""}', b'{"token": 5}']
)
def test_parse_token_response_rejects(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_token_response(body, now=NOW)


KEY = TokenRequest("https://auth.example/token", "svc", ("repository:a:pull",))


def test_token_cache_expiry_with_margin() -> None:
    cache = TokenCache()
    cache.put(KEY, Token("t", NOW + DEFAULT_EXPIRES_IN), now=NOW)
    assert cache.get(KEY, now=NOW) == "t"
    assert cache.get(KEY, now=NOW + DEFAULT_EXPIRES_IN - EXPIRY_MARGIN - 0.001) == "t"
    assert cache.get(KEY, now=NOW + DEFAULT_EXPIRES_IN - EXPIRY_MARGIN) is None
    assert len(cache) == 0  # dropped once expired
    cache.put(KEY, Token("u", NOW + 300), now=NOW)
    assert cache.get(KEY, now=NOW + 200) == "u"


def test_token_cache_keys_on_everything() -> None:
    cache = TokenCache()
    cache.put(KEY, Token("anon", NOW + 300), now=NOW)
    for other in (
        TokenRequest(KEY.realm, KEY.service, KEY.scopes, credential_identity(("u", "p"))),
        TokenRequest(KEY.realm, "other", KEY.scopes),
        TokenRequest("https://auth2.example/token", KEY.service, KEY.scopes),
        TokenRequest(KEY.realm, KEY.service, ("repository:b:pull",)),
    ):
        assert cache.get(other, now=NOW) is None
    cache.discard(KEY)
    assert cache.get(KEY, now=NOW) is None
    cache.discard(KEY)  # discarding twice is fine


def test_token_cache_eviction_prefers_expired_then_soonest() -> None:
    cache = TokenCache(max_entries=2)
    keys = [TokenRequest("r", None, (f"s{i}",)) for i in range(4)]
    cache.put(keys[0], Token("0", NOW + 100), now=NOW)
    cache.put(keys[1], Token("1", NOW + 500), now=NOW)
    cache.put(keys[2], Token("2", NOW + 300), now=NOW)  # full: evicts 0, soonest to expire
    assert [cache.get(k, now=NOW) for k in keys[:3]] == [None, "1", "2"]
    cache.put(keys[3], Token("3", NOW + 900), now=NOW + 400)  # 2 has expired by then
    assert [cache.get(k, now=NOW + 400) for k in keys[1:]] == ["1", None, "3"]
    cache.put(keys[1], Token("1b", NOW + 900), now=NOW)  # replacing never evicts
    assert len(cache) == 2


def test_credential_identity() -> None:
    alice = credential_identity(("alice", "pw"))
    assert credential_identity(None) == ""
    assert alice == credential_identity(("alice", "pw"))
    assert alice.startswith("alice#")
    assert "hunter2" not in credential_identity(("alice", "hunter2"))
    assert alice != credential_identity(("alice", "pw2"))
    assert alice != credential_identity(("bob", "pw"))


def test_basic_authorization_rfc7617_example() -> None:
    assert basic_authorization(("Aladdin", "open sesame")) == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("registry-1.docker.io", "docker.io"),
        ("auth.docker.io", "docker.io"),
        ("Production.CloudFlare.Docker.COM.", "docker.com"),
        ("ghcr.io", "ghcr.io"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


@pytest.mark.parametrize(
    ("target", "upstream", "allowed"),
    [
        ("https://auth.docker.io/token", "https://registry-1.docker.io", True),
        ("https://AUTH.Docker.IO./token", "https://registry-1.docker.io", True),
        ("https://ghcr.io/token", "https://ghcr.io", True),
        ("https://ghcr.io:8443/token", "https://ghcr.io", True),
        ("https://evil.example/token", "https://registry-1.docker.io", False),
        ("https://docker.io.evil.example/token", "https://registry-1.docker.io", False),
        ("https://pkg-containers.githubusercontent.com/x", "https://ghcr.io", False),
        ("http://auth.docker.io/token", "https://registry-1.docker.io", False),  # downgrade
        ("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", True),
        ("http://127.0.0.2:5001/token", "http://127.0.0.1:5000", False),
        ("https://[::1]:9/token", "https://[::1]:5000", True),
        ("https://localhost:1/token", "https://localhost:5000", True),
        ("/token", "https://ghcr.io", False),
        ("https://ghcr.io/token", "not a url", False),
    ],
)
def test_may_send_credentials(target: str, upstream: str, allowed: bool) -> None:
    assert may_send_credentials(target, upstream) is allowed
