"""Errors of the operator tools, a branch of the one peer error tree (``peer.errors``).

::

    PeerError                         peer/errors.py
    └── OpsError                      an operator command cannot do what was asked
        ├── ImageListError            malformed lines in an image list (all of them, numbered)
        ├── BadReference              one image reference outside the grammar
        ├── ManifestError             a manifest we cannot walk (schema 1, bad JSON, no platform)
        ├── ServiceUnavailable        a node or tracker cannot be reached (exit code 3)
        └── NodeError                 the node answered an OCI error (carries status and code)
            ├── ImageDenied           403 DENIED: not in the node's allows.txt
            └── ImageNotFound         404: neither the node nor its origin has it

``peer.errors.IntegrityError`` (bytes that do not match their digest) and the
``UpstreamError`` family (from :class:`peer.mirror.upstream.Upstream`) are used as they are.
Every message is written for an operator: it names the image or service and says what to
do; the CLI prints ``str(exc)`` and never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peer.errors import PeerError


class OpsError(PeerError):
    """Base of the operator tools' errors."""


@dataclass(frozen=True, slots=True)
class LineError:
    """One malformed line of an image list: 1-based number, the text, and why."""

    lineno: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.text!r}: {self.reason}"


class ImageListError(OpsError):
    """An image list has malformed lines; ``errors`` lists every one, not only the first."""

    def __init__(self, source: str, errors: Sequence[LineError]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = "\n".join(f"  {source}:{e.lineno}: {e.text!r}: {e.reason}" for e in errors)
        super().__init__(f"{source}: {len(errors)} malformed line(s)\n{lines}")


class BadReference(OpsError):
    """An image reference is outside the grammar; the message says which part and why."""


class ManifestError(OpsError):
    """A manifest cannot be walked: unknown media type, bad JSON, or no matching platform."""


class ServiceUnavailable(OpsError):
    """A node or the tracker cannot be reached (refused, timed out, DNS): check the URL."""


class NodeError(OpsError):
    """The node answered an OCI error; ``status`` and ``code`` are the node's."""

    def __init__(self, message: str, *, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ImageDenied(NodeError):
    """The node refused the image (403 DENIED): it is not in that node's allows.txt."""


class ImageNotFound(NodeError):
    """404: the node's origin does not have this repository, tag or digest."""
