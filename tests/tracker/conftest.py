"""Fixtures of the tracker tests: a real ``redis-server`` for the Redis store tests."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers import procs
from tests.helpers.clock import Clock
from tracker.model import Policy
from tracker.redis_store import RedisStore


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``unix://…/redis.sock`` of a throwaway redis-server (no persistence), one per session.

    Skips the test only when ``redis-server`` is not installed. Tests isolate themselves
    with their own key prefix instead of flushing.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    # A short directory: Unix socket paths are limited to ~107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="shoal-redis-"))
    sock = workdir / "redis.sock"
    log = workdir / "redis.log"
    proc = procs.start(
        [binary, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
         "--dir", workdir],
        log,
    )  # fmt: skip
    try:
        procs.wait_for(
            lambda: True if sock.exists() else None,
            what="redis-server",
            timeout=15,
            proc=proc,
            log_path=log,
        )
        yield f"unix://{sock}"
    finally:
        procs.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A Redis store of its own (a fresh key prefix) on the session's redis-server."""
    store = RedisStore.from_url(redis_url, Policy(), prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield store
    await store.aclose()


@pytest.fixture
def clock() -> Clock:
    """A wall clock the test sets (``clock.now``), starting at ``tests.helpers.clock.T0``."""
    return Clock()
