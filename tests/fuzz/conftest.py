"""Hostile-input fuzzing: the registry endpoint, the tracker API, the peer wire protocol.

Each surface is a real server (an in-process node or tracker on its own trio loop in a
background thread, :mod:`tests.helpers.background`) driven over real loopback sockets by
Hypothesis from the test thread. Every case asserts the server's answer (a 2xx/3xx/4xx with
an OCI or tracker error body, or a dropped connection) and that the server is still alive
and serving; at the end, that it logged no ERROR (a bug caught at a per-request boundary).

Case counts: ``SHOAL_FUZZ_EXAMPLES`` per surface (default 200: the CI run). The campaign
recorded in docs/reliability.md is ``SHOAL_FUZZ_EXAMPLES=10000 .venv/bin/pytest tests/fuzz``;
``SHOAL_FUZZ_REPORT=path`` appends each surface's executed case count as a JSON line.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "200"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # real sockets on a loaded machine: time is not the property under test
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the server is shared by all cases on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

CASES: Counter[str] = Counter()


class ErrorLog(logging.Handler):
    """Collects ERROR records of the server under test (its per-request bug catcher)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in self.records]


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    """ERROR records from ``peer`` and ``tracker`` during the test; must stay empty."""
    handler = ErrorLog()
    loggers = [logging.getLogger("peer"), logging.getLogger("tracker")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert handler.messages() == []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A campaign runs longer than the suite's per-test deadline: scale it with the cases."""
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(max(240, EXAMPLES // 10)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    report = os.environ.get("SHOAL_FUZZ_REPORT")
    if report and CASES:
        with Path(report).open("a") as out:
            out.write(json.dumps({"examples": EXAMPLES, "cases": dict(CASES)}) + "\n")
