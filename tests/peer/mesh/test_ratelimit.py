"""Token bucket: exact waits with literal ``now``, a no-burst property, and the trio helper."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from peer.mesh.ratelimit import CHUNK, TokenBucket, acquire


def test_waits_are_exact() -> None:
    bucket = TokenBucket(100.0, capacity=50.0, now=0.0)
    assert bucket.reserve(50, 0.0) == 0.0  # starts full
    assert bucket.reserve(100, 0.0) == pytest.approx(1.0)  # in debt: wait for 100 tokens
    assert bucket.reserve(50, 0.0) == pytest.approx(1.5)  # queued behind the debt
    assert bucket.tokens(1.5) == pytest.approx(0.0)
    assert bucket.tokens(10.0) == pytest.approx(50.0)  # refills up to capacity only


def test_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(10.0, capacity=10.0, now=5.0)
    bucket.reserve(10, 5.0)
    assert bucket.tokens(4.0) == 0.0


@pytest.mark.parametrize(("rate", "capacity"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_parameters(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity=capacity)


def test_negative_reservation_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(1.0).reserve(-1, 0.0)


@given(
    st.floats(1e3, 1e9),
    st.lists(st.tuples(st.floats(0, 0.01), st.integers(0, CHUNK)), min_size=1, max_size=60),
)
def test_never_exceeds_rate_over_any_window(rate: float, steps: list[tuple[float, int]]) -> None:
    """Bytes released in [a, b] <= rate x (b - a) + one chunk, for every window."""
    bucket = TokenBucket(rate, now=0.0)
    now = 0.0
    releases: list[tuple[float, int]] = []
    for gap, size in steps:
        now += gap
        releases.append((now + bucket.reserve(size, now), size))
    releases.sort()
    for i, (start, _) in enumerate(releases):
        total = 0
        for end, size in releases[i:]:
            total += size
            assert total <= rate * (end - start) + CHUNK + 1e-6 * rate


def test_long_run_rate_is_exact() -> None:
    bucket = TokenBucket(1000.0, capacity=100.0, now=0.0)
    release = 0.0
    for _ in range(1000):  # 100 kB reserved all at once by an eager sender
        release = bucket.reserve(100, 0.0)
    assert release == pytest.approx(99.9)  # 100 kB - 100 B initial burst at 1 kB/s


async def test_acquire_sleeps_on_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(1000.0, capacity=1000.0, now=trio.current_time())
    start = trio.current_time()
    for _ in range(5):
        await acquire(bucket, 1000)
    assert trio.current_time() - start == pytest.approx(4.0)
    await acquire(None, 10**9)  # no limit: returns at once
    assert trio.current_time() - start == pytest.approx(4.0)
