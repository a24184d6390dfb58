"""Range header tables (the conformance suite's six cases, plus edge cases)."""

from __future__ import annotations

import pytest

from peer.mirror.ranges import ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=500-1499", ByteRange(500, 1499, 2048)),
        ("bytes=500-", ByteRange(500, 2047, 2048)),
        ("bytes=-500", ByteRange(1548, 2047, 2048)),
        ("bytes=2000-5000", ByteRange(2000, 2047, 2048)),
        ("bytes=0-", ByteRange(0, 2047, 2048)),
        ("bytes=-5000", ByteRange(0, 2047, 2048)),
        (" bytes=0-0 ", ByteRange(0, 0, 2048)),
        # multi-range and unknown units are served whole (RFC 9110 allows ignoring Range)
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
        ("garbage", None),
    ],
)
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 2048) == expected


@pytest.mark.parametrize("header", ["bytes=500-0", "bytes=5000-10000", "bytes=2048-", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 2048)


def test_content_range_and_length() -> None:
    r = ByteRange(500, 1499, 2048)
    assert (r.length, r.content_range()) == (1000, "bytes 500-1499/2048")


def test_empty_body_suffix_is_unsatisfiable() -> None:
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=-10", 0)
