"""Fuzz the tracker's HTTP API: schemathesis against its own /openapi.json, and Hypothesis
msgpack bodies (structured and mutated) posted to every ``/v1`` route.

The tracker runs in-process (memory store, an admin token) on a real socket. Every answer
must be a documented 2xx/4xx with the documented body — never a 500 — and the tracker must
log no ERROR and keep answering ``/healthz``. Cases: ``SHOAL_FUZZ_EXAMPLES`` in all for
each of the two fuzzers (spread over the API's operations for schemathesis).
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import CASES, EXAMPLES, FUZZ, ErrorLog
from tests.helpers.background import Background, in_thread
from tests.helpers.mesh import running_tracker
from tracker import protocol as p

TOKEN = "fuzz-admin-token"
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def tracker() -> Iterator[Background[str]]:
    with in_thread(lambda: running_tracker(admin_token=TOKEN)) as background:
        yield background


def _operations() -> list[Any]:
    """Every operation of tracker/openapi.json (the file the tracker serves)."""
    document = json.loads(importlib.resources.files("tracker").joinpath("openapi.json").read_text())
    return [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]


OPERATIONS = _operations()


# schemathesis's own pytest plugin does not run under pytest 9 ('Function' object has no
# attribute '_nodeid'), so its case strategies are driven by Hypothesis directly.
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_tracker_api_conforms_to_its_schema(
    operation: Any, tracker: Background[str], error_log: ErrorLog
) -> None:
    """Positive and negative cases of one operation, half of them with the admin token."""
    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    cases = modes.flatmap(operation.as_strategy)

    @settings(FUZZ, max_examples=math.ceil(EXAMPLES / len(OPERATIONS)))
    @given(case=cases, token=st.booleans())
    def case(case: Any, token: bool) -> None:
        CASES["tracker API (schemathesis)"] += 1
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        response = case.call(base_url=tracker.value, headers=headers, timeout=30)
        CASES[f"tracker API (schemathesis): {response.status_code // 100}xx"] += 1
        assert response.status_code < 500 or response.status_code == 503, response.text
        case.validate_response(
            response,
            checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
        )
        assert tracker.alive()

    case()


# --- msgpack bodies -------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
    st.text(max_size=80), st.binary(max_size=80),
    st.sampled_from([DIGEST, "sha256:", "a" * 64, "peer-1", "127.0.0.1", "docker.io", ""]),
    st.binary(min_size=8, max_size=32),  # session-sized
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=8)
        | st.dictionaries(st.text(max_size=12) | st.integers(-5, 5), inner, max_size=8)
    ),
    max_leaves=40,
)


def _valid_messages() -> list[dict[str, Any]]:
    """Well-formed bodies of every /v1 request, as msgpack-able objects to mutate."""
    session = b"s" * 16
    messages = [
        p.Announce(peer_id="fz", session=session, host="127.0.0.1", port=5051,
                   held=(p.BlobHeld(DIGEST, 10),), upload_slots=4),
        p.Leave(peer_id="fz", session=session),
        p.Lookup(digest=DIGEST, peer_id="fz", limit=4),
        p.PieceHashes(digest=DIGEST, size=10, piece_size=1 << 20, hashes=(b"h" * 32,),
                      peer_id="fz"),
        p.PiecesQuery(digest=DIGEST),
        p.TagRecord(registry="docker.io", repository="library/x", tag="v1", accept="*/*",
                    digest=DIGEST, media_type="application/json", size=10, resolved_at=1.0),
        p.TagQuery(registry="docker.io", repository="library/x", tag="v1", accept="*/*"),
        p.LeaseRequest(digest=DIGEST, piece_index=0, peer_id="fz", session=session, ttl=5.0),
    ]  # fmt: skip
    return [msgpack.unpackb(p.encode(m), raw=False, strict_map_key=False) for m in messages]


_VALID = _valid_messages()
_ROUTES = ["/v1/announce", "/v1/leave", "/v1/lookup", "/v1/pieces", "/v1/pieces/query",
           "/v1/tags", "/v1/tags/query", "/v1/lease"]  # fmt: skip


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    """A valid message with fields replaced, dropped or added; or any msgpack; or bytes."""
    kind = draw(st.sampled_from(["mutated", "mutated", "any", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "any":
        return msgpack.packb(draw(_values), use_bin_type=True)
    message = draw(st.sampled_from(_VALID))
    obj: Any = dict(message) if isinstance(message, dict) else list(message)
    keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace" and keys:
            obj[draw(st.sampled_from(keys))] = draw(_values)
        elif action == "drop" and keys:
            key = draw(st.sampled_from(keys))
            if isinstance(obj, dict):
                obj.pop(key, None)
            elif key < len(obj):
                del obj[key]
            keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
        elif isinstance(obj, dict):
            obj[draw(st.text(max_size=10))] = draw(_values)
        else:
            obj.append(draw(_values))
    return msgpack.packb(obj, use_bin_type=True)


def test_msgpack_bodies_to_every_v1_route(tracker: Background[str], error_log: ErrorLog) -> None:
    http = httpx.Client(base_url=tracker.value, timeout=30, trust_env=False)
    types = ["application/msgpack", "application/octet-stream", "application/json", ""]

    @FUZZ
    @given(route=st.sampled_from(_ROUTES), body=_bodies(), content_type=st.sampled_from(types))
    def case(route: str, body: bytes, content_type: str) -> None:
        CASES["tracker /v1 (msgpack)"] += 1
        resp = http.post(route, content=body, headers={"content-type": content_type})
        CASES[f"tracker /v1 (msgpack): {resp.status_code // 100}xx"] += 1
        assert resp.status_code < 500, (route, body, resp.status_code, resp.text)
        if resp.status_code >= 400:
            assert isinstance(resp.json()["error"], str)
        assert tracker.alive()

    try:
        case()
        assert http.get("/healthz").status_code == 200
    finally:
        http.close()
