"""The dashboard's memory (tracker.activity), pure, with literal times."""

from __future__ import annotations

import pytest

from tracker import protocol as p
from tracker.activity import (
    Activity,
    ErrorEvent,
    TrafficPoint,
    downloads,
    due,
    node_errors,
    progress_step,
)

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def event(n: int) -> ErrorEvent:
    return ErrorEvent(at=float(n), source="a", kind="origin", message=f"e{n}")


def point(at: float, origin: int = 0, peers: int = 0) -> TrafficPoint:
    return TrafficPoint(at=at, bytes_from_origin=origin, bytes_from_peers=peers)


def test_errors_are_newest_first_and_capped() -> None:
    act = Activity(progress_ttl=10.0, max_errors=3)
    act.note_errors([event(1), event(2)])
    act.note_errors([event(3), event(4)])
    assert [e.message for e in act.errors(10)] == ["e4", "e3", "e2"]
    assert [e.message for e in act.errors(1)] == ["e4"]


@pytest.mark.parametrize(
    ("old", "held", "now", "expected"),
    [
        (None, 5, 10.0, (5, 10.0)),  # new download
        ((5, 10.0), 5, 20.0, (5, 10.0)),  # no change: keeps the old time
        ((5, 10.0), 9, 20.0, (9, 20.0)),  # grew
        ((5, 10.0), 0, 20.0, (0, 20.0)),  # restarted: movement too
    ],
)
def test_progress_step(
    old: tuple[int, float] | None, held: int, now: float, expected: tuple[int, float]
) -> None:
    assert progress_step(old, held, now) == expected


def test_progress_is_per_peer_and_blob_and_expires() -> None:
    act = Activity(progress_ttl=100.0)
    act.progress("a", [(D1, 5), (D2, 1)], 10.0)
    act.progress("b", [(D1, 7)], 11.0)
    act.progress("a", [(D1, 5)], 40.0)  # D1 stalled; D2 no longer in progress
    assert act.last_progress("a", D1, 40.0) == 10.0
    assert act.last_progress("a", D2, 40.0) is None
    assert act.last_progress("b", D1, 40.0) == 11.0
    act.progress("a", [], 50.0)  # nothing in progress: no change, entries age out
    assert act.last_progress("a", D1, 139.9) == 10.0
    assert act.last_progress("a", D1, 140.0) is None  # 100 s after the last listing
    assert act.last_progress("b", D1, 110.9) == 11.0
    act.sweep(111.0)  # b's entries expired, a's not yet
    assert act.last_progress("b", D1, 0.0) is None
    assert act.last_progress("a", D1, 139.9) == 10.0


def test_traffic_points_respect_the_interval_and_the_cap() -> None:
    act = Activity(progress_ttl=1.0, max_points=3)
    assert act.sample(point(0.0, 1, 2), interval=10.0)
    assert not act.sample(point(9.9, 5, 5), interval=10.0)
    for at in (10.0, 20.0, 30.0):
        assert act.sample(point(at, int(at)), interval=10.0)
    assert [x.at for x in act.traffic()] == [10.0, 20.0, 30.0]
    assert due(None, 0.0, 10.0)
    assert due(0.0, 10.0, 10.0)
    assert not due(0.0, 9.99, 10.0)


def test_announce_helpers() -> None:
    a = p.Announce(
        peer_id="a", session=b"s" * 16, host="h", port=1,
        held=(p.BlobHeld(D2, 3),),
        in_progress=(p.BlobInProgress(D1, 10, 4), p.BlobInProgress(D2, 3, 1)),
        errors=(p.NodeError(at=5.0, kind="origin", message="x"),
                p.NodeError(at=99.0, kind="piece_hash", message="y")),
    )  # fmt: skip
    assert downloads(a) == [(D1, 4)]  # D2 is held: not a download
    assert node_errors(a, 50.0) == [
        ErrorEvent(at=5.0, source="a", kind="origin", message="x"),
        ErrorEvent(at=50.0, source="a", kind="piece_hash", message="y"),  # clock ahead
    ]
