"""Errors a node reports to the tracker: the pure log, and a real corrupt-peer report."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import trio

from peer.mesh.incidents import IncidentLog, scrub
from tests.helpers.mesh import (
    mesh_nodes,
    metric,
    origin_gate,
    running_tracker,
    wait_held,
    wait_metric,
)
from tests.helpers.registry import Registry
from tracker import protocol as p


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("GET https://user:pa55@reg.example/v2/x?token=abc&y=1 failed",
         "GET https://reg.example/v2/x?… failed"),
        ("401 with Authorization: Bearer eyJhbGciOi.x-y_z", "401 with Authorization: Bearer …"),
        ("login: password=hunter2, user=bob", "login: password=…, user=bob"),
        ("two\nlines\r\tand\x00nul", "two lines and nul"),
        ("x" * 400, "x" * 299 + "…"),
    ],
)  # fmt: skip
def test_scrub_keeps_secrets_and_control_characters_out(raw: str, clean: str) -> None:
    assert scrub(raw) == clean
    # what scrub returns is always a valid message on the wire
    error = p.NodeError(at=1.0, kind="origin", message=scrub(raw))
    announce = p.Announce(peer_id="a", session=b"s" * 16, host="h", port=1, errors=(error,))
    assert p.decode(p.Announce, p.encode(announce)).errors == (error,)


def test_log_keeps_the_newest_skips_repeats_and_forgets_what_was_delivered() -> None:
    log = IncidentLog(capacity=3)
    log.note(1.0, "origin", "a")
    log.note(2.0, "origin", "a")  # the same error still pending: not twice
    log.note(3.0, "piece_hash", "b")
    sent = log.pending()
    assert [(e.at, e.message) for e in sent] == [(1.0, "a"), (3.0, "b")]
    log.note(4.0, "origin", "c")  # arrives while the announce is in flight
    log.delivered(sent)
    assert [e.message for e in log.pending()] == ["c"]
    for n in range(5):
        log.note(10.0 + n, "origin", f"n{n}")
    assert [e.message for e in log.pending()] == ["n2", "n3", "n4"]
    assert log.dropped == 3
    log.delivered(())  # an announce with nothing (or a failed one) forgets nothing
    assert len(log.pending()) == 3


async def _first_errors(client: httpx.AsyncClient, tracker: str) -> list[dict[str, str]]:
    """The tracker's recent errors, once there are any (they come with an announce)."""
    with trio.fail_after(20):
        while True:
            reply = await client.get(tracker + "/admin/errors")
            errors: list[dict[str, str]] = reply.json()["errors"]
            if errors:
                return errors
            await trio.sleep(0.05)


async def test_a_node_reports_a_corrupt_peer_to_the_tracker(
    registry: Registry, tmp_path: Path
) -> None:
    """Node B bans node A for a bad piece; B's next announce puts it on the tracker's list.

    B must meet A before it may use the origin, whatever the timing (``origin_gate``).
    Without the gate, B only met A because A's origin leases (15 s) still guarded every
    piece; once they lapse, B may fetch the whole blob from the origin before its link to
    A is up.
    """
    name = registry.new_repo("library/reported")
    data = hashlib.shake_256(b"reported").digest(4 * 1024 * 1024)
    digest = registry.push_blob(name, data)
    path = f"/v2/{name}/blobs/{digest}?ns=docker.io"
    async with running_tracker(max_origin_fetches=1) as tracker, mesh_nodes(
        tmp_path, tracker, 2, upstreams={"docker.io": registry.url}
    ) as (a, b), httpx.AsyncClient(timeout=60) as client:  # fmt: skip
        assert (await client.get(a.url + path)).content == data
        await wait_held(tracker, digest)
        cached = next((tmp_path / "node0" / "cache" / "blobs").rglob(digest.split(":")[1]))
        raw = bytearray(cached.read_bytes())
        for offset in range(0, len(raw), 1024 * 1024):
            raw[offset] ^= 0xFF  # A now serves bad pieces
        cached.write_bytes(bytes(raw))
        pulled: list[bytes] = []

        async def pull() -> None:
            pulled.append((await client.get(b.url + path)).content)

        async with trio.open_nursery() as nursery:
            async with origin_gate(tracker, digest):  # B can only get pieces from A
                nursery.start_soon(pull)
                await wait_metric(b.url, "shoal_peers_banned_total", 1)
        assert pulled == [data]
        metrics = (await client.get(b.url + "/metrics")).text
        assert metric(metrics, "shoal_peers_banned_total") == 1
        errors = await _first_errors(client, tracker)
    (error,) = errors
    assert error["kind"] == "piece_hash"
    assert error["message"].startswith("peer ")
    assert f"sent a piece of {digest} whose hash did not match" in error["message"]
    assert error["source"] != error["message"].split()[1]  # B reports A, not itself


async def test_a_node_reports_an_unreachable_origin(registry: Registry, tmp_path: Path) -> None:
    """Nobody holds the blob and the origin is down: the pull fails, the tracker hears why.

    Errors travel with the next announce, so the tracker asks for one a second here.
    """
    name = registry.new_repo("library/unreachable")
    digest = registry.push_blob(name, hashlib.shake_256(b"unreachable").digest(1000))
    async with running_tracker(announce_interval=1.0, peer_ttl=10.0) as tracker, mesh_nodes(
        tmp_path, tracker, 1, upstreams={"docker.io": "http://127.0.0.1:9"}
    ) as (a,), httpx.AsyncClient(timeout=60) as client:  # fmt: skip
        response = await client.get(f"{a.url}/v2/{name}/blobs/{digest}?ns=docker.io")
        assert response.status_code == 503
        errors = await _first_errors(client, tracker)
    (error,) = errors
    assert (error["source"], error["kind"]) == ("node0", "origin")
    assert error["message"].startswith(f"docker.io/{name}: size of {digest}: ")


async def test_a_node_reports_an_origin_that_fails_a_manifest(
    registry: Registry, tmp_path: Path
) -> None:
    """A tag the origin cannot resolve (it is down) and nobody remembers: 503, and the
    tracker's errors say which tag of which repository failed."""
    async with running_tracker(announce_interval=1.0, peer_ttl=10.0) as tracker, mesh_nodes(
        tmp_path, tracker, 1, upstreams={"docker.io": "http://127.0.0.1:9"}
    ) as (a,), httpx.AsyncClient(timeout=60) as client:  # fmt: skip
        response = await client.get(f"{a.url}/v2/library/gone/manifests/v1?ns=docker.io")
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
        errors = await _first_errors(client, tracker)
    (error,) = errors
    assert (error["source"], error["kind"]) == ("node0", "origin")
    assert error["message"].startswith("docker.io/library/gone: tag v1: ")
