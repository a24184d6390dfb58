"""Fixtures of the operator-tool tests; the machinery is in tests/ops/helpers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers.node import Node, running_node
from tests.helpers.registry import Registry
from tests.ops.helpers import TrackerProcess, spawn_tracker

#: Tags stay fresh for the whole test, so a tag moved upstream stays stale on the node.
TAG_TTL = 3600.0


@pytest.fixture
async def node(registry: Registry, tmp_path: Path) -> AsyncIterator[Node]:
    """An in-process node for which docker.io is the test registry."""
    async with running_node(
        tmp_path / "node", upstreams={"docker.io": registry.url}, tag_ttl=TAG_TTL
    ) as n:
        yield n


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[TrackerProcess]:
    """A real ``shoal tracker`` process with an empty memory store."""
    with spawn_tracker(tmp_path / "tracker") as t:
        yield t
