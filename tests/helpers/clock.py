"""A settable wall clock for the tracker app's ``clock=`` (tests move ``now`` by hand)."""

from __future__ import annotations

#: Where every test clock starts (Unix seconds, November 2023).
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now
