"""tracker.auth, pure: the cluster keys, request and answer signatures, the replay guard."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from tracker.auth import (
    MAX_SKEW,
    ClusterKeys,
    ReplayGuard,
    SignedRequest,
    frame,
    parse_header,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from tracker.errors import ClusterAuthFailed

SECRET = "0123456789abcdef0123456789abcdef"
KEYS = ClusterKeys.parse(SECRET)
NOW = 1_700_000_000.0
NONCE = b"\x01" * 16
BODY = b"\x82\xa1v\x01\xa1t\xa8announce"


def signed(**overrides: object) -> str:
    args: dict[str, object] = {
        "method": "POST", "path": "/v1/announce", "body": BODY, "now": NOW, "nonce": NONCE,
    }  # fmt: skip
    args.update(overrides)
    return sign_request(KEYS, **args).header()  # type: ignore[arg-type]


def verify(header: str | None, *, keys: ClusterKeys = KEYS, **overrides: object) -> None:
    args: dict[str, object] = {"method": "POST", "path": "/v1/announce", "body": BODY, "now": NOW}
    args.update(overrides)
    verify_request(keys, header, **args)  # type: ignore[arg-type]


# ---- keys --------------------------------------------------------------------------------


def test_keys_parse_rotation_lists_and_hide_in_repr() -> None:
    keys = ClusterKeys.parse(f" {SECRET} , {SECRET[::-1]} ,")
    assert keys.secrets == (SECRET.encode(), SECRET[::-1].encode())
    assert SECRET not in repr(keys)
    assert "2 secret" in repr(keys)


@pytest.mark.parametrize("text", ["", ",", "short", f"{SECRET},short"])
def test_keys_refuse_empty_and_short_secrets(text: str) -> None:
    with pytest.raises(ValueError):
        ClusterKeys.parse(text)


def test_first_secret_signs_and_all_verify() -> None:
    old, new = ClusterKeys.parse(SECRET), ClusterKeys.parse("n" * 32)
    both = ClusterKeys.parse(f"{'n' * 32},{SECRET}")
    assert both.mac(b"x") == new.mac(b"x")
    assert both.verify(b"x", old.mac(b"x"))
    assert both.verify(b"x", new.mac(b"x"))
    assert not old.verify(b"x", new.mac(b"x"))


def test_frame_is_unambiguous() -> None:
    assert frame(b"L", b"ab", b"c") != frame(b"L", b"a", b"bc")
    assert frame(b"L", b"ab") == b"L\x00\x00\x00\x02ab"


# ---- requests ----------------------------------------------------------------------------


def test_request_vector() -> None:
    """HMAC-SHA256 over the framed fields, spelled out for other implementations."""
    parts = [b"POST", b"/v1/announce", b"1700000000", NONCE, hashlib.sha256(BODY).digest()]
    message = b"shoal-tracker-request-v1" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    mac = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert signed() == f"t=1700000000,n={NONCE.hex()},mac={mac}"


def test_good_request_passes_and_returns_its_signature() -> None:
    result = verify_request(KEYS, signed(), method="POST", path="/v1/announce", body=BODY, now=NOW)
    assert result == parse_header(signed())


TAMPERED = [
    ("method", {"method": "PUT"}),
    ("path", {"path": "/v1/lookup"}),
    ("body", {"body": BODY + b"\x00"}),
    ("empty body", {"body": b""}),
]


@pytest.mark.parametrize(("why", "change"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_request_is_refused(why: str, change: dict[str, Any]) -> None:
    with pytest.raises(ClusterAuthFailed, match="wrong cluster MAC"):
        verify(signed(), **change)


def test_tampered_timestamp_or_nonce_is_refused() -> None:
    good = parse_header(signed())
    for forged in (
        SignedRequest(good.timestamp + 1, good.nonce, good.mac),
        SignedRequest(good.timestamp, b"\x02" * 16, good.mac),
    ):
        with pytest.raises(ClusterAuthFailed, match="wrong cluster MAC"):
            verify(forged.header())


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(ClusterAuthFailed, match="another --cluster-secret"):
        verify(signed(), keys=ClusterKeys.parse("z" * 32))


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (MAX_SKEW, True), (-MAX_SKEW, True), (61, False), (-61, False)]
)
def test_clock_skew(offset: float, ok: bool) -> None:
    header = signed(now=NOW + offset)
    if ok:
        verify(header)
    else:
        with pytest.raises(ClusterAuthFailed, match="off the tracker's clock"):
            verify(header)


MALFORMED = [
    None,
    "",
    "t=1700000000",
    f"t=1700000000,n={NONCE.hex()}",
    f"t=1700000000,n={NONCE.hex()},mac={'0' * 64},x=1",
    f"t=1700000000,t=1700000000,n={NONCE.hex()},mac={'0' * 64}",
    f"t=-1,n={NONCE.hex()},mac={'0' * 64}",
    f"t=1e9,n={NONCE.hex()},mac={'0' * 64}",
    f"t=1700000000,n=abc,mac={'0' * 64}",
    f"t=1700000000,n={'0' * 66},mac={'0' * 64}",
    f"t=1700000000,n={NONCE.hex()},mac={'0' * 63}",
    f"t=1700000000,n={NONCE.hex()},mac={'G' * 64}",
    f"t=1700000000,n={NONCE.hex().upper()},mac={'0' * 64}",
    "Bearer something",
]


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(ClusterAuthFailed):
        verify(header)


def test_errors_never_carry_the_secret_or_the_expected_mac() -> None:
    forged = parse_header(signed())
    expected = forged.mac.hex()
    with pytest.raises(ClusterAuthFailed) as info:
        verify(signed(), body=b"other")
    assert SECRET not in info.value.message
    assert expected not in info.value.message


# ---- replays -----------------------------------------------------------------------------


def test_replay_within_the_window_is_refused() -> None:
    guard = ReplayGuard()
    header = signed()
    verify_request(
        KEYS, header, method="POST", path="/v1/announce", body=BODY, now=NOW, replays=guard
    )
    with pytest.raises(ClusterAuthFailed, match="replayed"):
        verify_request(
            KEYS, header, method="POST", path="/v1/announce", body=BODY, now=NOW + 1,
            replays=guard,
        )  # fmt: skip
    # the same request with a fresh nonce is a new request
    verify_request(
        KEYS, signed(nonce=b"\x03" * 16), method="POST", path="/v1/announce", body=BODY,
        now=NOW, replays=guard,
    )  # fmt: skip
    assert len(guard) == 2


def test_replay_guard_forgets_what_the_clock_check_refuses_anyway() -> None:
    guard = ReplayGuard(window=60)
    assert guard.first_time(b"a" * 32, 1000, now=1000)
    assert guard.first_time(b"b" * 32, 1030, now=1030)
    assert not guard.first_time(b"a" * 32, 1000, now=1060)
    assert guard.first_time(b"c" * 32, 1100, now=1100)  # 1000 and 1030 have expired
    assert len(guard) == 1


def test_replay_guard_saturates_without_refusing() -> None:
    guard = ReplayGuard(max_entries=2)
    for i in range(3):
        assert guard.first_time(bytes([i]) * 32, 1000, now=1000)
    assert guard.saturated
    assert len(guard) == 2


# ---- answers -----------------------------------------------------------------------------


def test_answer_signature_binds_request_status_and_body() -> None:
    request = parse_header(signed())
    header = sign_response(KEYS, request=request, status=200, body=b"reply")
    assert verify_response(KEYS, header, request=request, status=200, body=b"reply")
    other = parse_header(signed(nonce=b"\x04" * 16))
    assert not verify_response(KEYS, header, request=other, status=200, body=b"reply")
    assert not verify_response(KEYS, header, request=request, status=201, body=b"reply")
    assert not verify_response(KEYS, header, request=request, status=200, body=b"replY")
    assert not verify_response(ClusterKeys.parse("q" * 16), header, request=request, status=200,
                               body=b"reply")  # fmt: skip
    for bad in (None, "", "mac=", "mac=zz", header.upper(), header[:-2]):
        assert not verify_response(KEYS, bad, request=request, status=200, body=b"reply")
