"""Fixtures of the fault-injection suite (see docs/reliability.md for the scenario table)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.ledger import Ledger


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """Counts the test's pulls; fails it if any corrupt byte was served."""
    book = Ledger(request.node.nodeid)
    yield book
    book.write()
    assert book.corrupt_bytes == 0
