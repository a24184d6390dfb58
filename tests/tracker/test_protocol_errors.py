"""``Announce.errors``: an optional field, compatible both ways with peers that lack it."""

from __future__ import annotations

import msgpack
import pytest

from tracker import protocol as p
from tracker.errors import BadMessage

S = b"s" * 16
BASE = {"v": 1, "t": "announce", "peer_id": "a", "session": S, "host": "h", "port": 1,
        "held": [], "in_progress": [], "upload_slots": 0, "load": 0, "bytes_served": 0,
        "bytes_from_origin": 0, "bytes_from_peers": 0}  # fmt: skip


def test_an_announce_without_errors_is_the_old_bytes() -> None:
    """A peer of before the field sends no ``errors``; a new peer with none sends the same."""
    old_body = msgpack.packb(BASE)
    message = p.decode(p.Announce, old_body)
    assert message.errors == ()
    assert msgpack.unpackb(p.encode(message)) == BASE


def test_errors_round_trip_and_an_old_decoder_would_ignore_them() -> None:
    errors = (p.NodeError(at=1.5, kind="origin", message="503 from the origin · é"),)
    message = p.Announce(peer_id="a", session=S, host="h", port=1, errors=errors)
    raw = msgpack.unpackb(p.encode(message))
    assert raw["errors"] == [[1.5, "origin", "503 from the origin · é"]]
    assert {k: v for k, v in raw.items() if k != "errors"} == BASE  # the rest is unchanged
    assert p.decode(p.Announce, p.encode(message)) == message


@pytest.mark.parametrize(
    ("errors", "why"),
    [
        ([[1.0, "origin"]], "every item must be an array of 3"),
        ([[1.0, "Origin!", "x"]], "not a valid kind"),
        ([[1.0, "origin", "two\nlines"]], "not a valid error message"),
        ([[1.0, "origin", "x" * 301]], "not a valid error message"),
        ([[-1.0, "origin", "x"]], "outside"),
        ([[1.0, "origin", "x"]] * 17, "17 items exceeds 16"),
        ("boom", "expected an array"),
    ],
)
def test_bad_errors_are_refused(errors: object, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        p.decode(p.Announce, msgpack.packb(BASE | {"errors": errors}))
