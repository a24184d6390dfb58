"""Book-keeping for fault scenarios: every pull is checked and counted.

A pull either completes with the right digest, or fails with an OCI error body
(``{"errors": [...]}``) — a *clean* error. A ``200``/``206`` whose bytes do not match is a
corrupt pull, and its bytes are counted as corrupt bytes served; every scenario asserts
that count is zero. With ``SHOAL_FAULTS_LEDGER=path`` each test appends its totals as one
JSON line, which is where the figures in docs/reliability.md come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx


class DirtyError(AssertionError):
    """An error answer without an OCI error body, or a corrupt success."""


@dataclass
class Ledger:
    scenario: str
    pulls: int = 0
    ok: int = 0
    clean_errors: int = 0
    corrupt_bytes: int = 0
    slowest_error: float = 0.0  # seconds, of the slowest clean error answer
    notes: dict[str, Any] = field(default_factory=dict)

    def check(
        self,
        resp: httpx.Response,
        digest: str,
        *,
        elapsed: float = 0.0,
        first: int = 0,
        whole: bytes | None = None,
    ) -> bool:
        """Count one answer; True if it delivered the right bytes.

        Args:
            resp: The answer (its body read).
            digest: What the full content must hash to.
            elapsed: Seconds the request took (for error answers).
            first: Offset of a ``206`` body; ``whole`` (the full content) checks it.
            whole: The expected full content, needed to check a partial body.

        Raises:
            DirtyError: A success with wrong bytes, or an error without an OCI body.
        """
        self.pulls += 1
        if resp.status_code in (200, 206):
            body = resp.content
            if resp.status_code == 206 or whole is not None:
                assert whole is not None, "pass whole= to check partial bodies"
                good = body == whole[first : first + len(body)]
                if resp.status_code == 200:
                    good = good and len(body) == len(whole)
            else:
                good = "sha256:" + hashlib.sha256(body).hexdigest() == digest
            if not good:
                self.corrupt_bytes += len(body)
                raise DirtyError(f"{resp.request.url}: {len(body)} bytes that are not {digest}")
            self.ok += 1
            return True
        if resp.request.method != "HEAD":
            try:
                errors = resp.json()["errors"]
                assert isinstance(errors, list)
                assert errors
                assert isinstance(errors[0]["code"], str)
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                raise DirtyError(
                    f"{resp.status_code} without an OCI error body: {resp.text!r}"
                ) from exc
        self.clean_errors += 1
        self.slowest_error = max(self.slowest_error, elapsed)
        return False

    def get(self, client: httpx.Client, url: str, digest: str, **kw: Any) -> httpx.Response:
        """GET ``url`` and :meth:`check` the answer."""
        started = time.monotonic()
        resp = client.get(url, **kw)
        self.check(resp, digest, elapsed=time.monotonic() - started)
        return resp

    def write(self) -> None:
        """Append this scenario's totals to ``$SHOAL_FAULTS_LEDGER``, if set."""
        path = os.environ.get("SHOAL_FAULTS_LEDGER")
        if path:
            with Path(path).open("a") as out:
                out.write(json.dumps(asdict(self)) + "\n")
