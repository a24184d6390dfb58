"""Validation helpers for decoded msgpack values (private to ``tracker.protocol``).

Each helper takes an untrusted value and either returns it with a precise type or raises
:class:`~tracker.errors.BadMessage` naming the field, so the codec reads as a list of
field declarations. ``bool`` is refused where an ``int`` is expected (Python's ``True``
is an ``int``; msgpack's is not).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from tracker.errors import BadMessage


@dataclass(frozen=True, slots=True)
class Rule:
    """A string field's grammar: a full-match regex and a length cap."""

    name: str
    pattern: re.Pattern[str]
    max_len: int


def _rule(name: str, pattern: str, max_len: int) -> Rule:
    return Rule(name, re.compile(pattern), max_len)


#: OCI image spec, registered algorithms only (sha256, sha512), lowercase hex.
DIGEST: Final = _rule("digest", r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}", 135)
#: Peer ids are chosen by peers: short, URL- and log-safe.
PEER_ID: Final = _rule("peer id", r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", 64)
#: A DNS name or an IP literal (IPv6 without brackets, optional %zone); RFC 1035 caps at 253.
HOST: Final = _rule("host", r"[A-Za-z0-9._:%-]{1,253}", 253)
#: Message kinds are this module's own short names.
KIND: Final = _rule("kind", r"[a-z_]{1,32}", 32)
#: A registry host with an optional port, as in an image reference.
REGISTRY: Final = _rule("registry", r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?", 259)
#: OCI distribution spec repository name grammar; registries cap names at 255 characters.
REPOSITORY: Final = _rule(
    "repository",
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*",
    255,
)
#: OCI distribution spec tag grammar (128 characters at most).
TAG: Final = _rule("tag", r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", 128)
#: A canonical Accept header: printable ASCII; real ones list a dozen media types.
ACCEPT: Final = _rule("accept", r"[\x20-\x7e]{0,1024}", 1024)
#: RFC 6838 type/subtype names (127 characters each), no parameters.
MEDIA_TYPE: Final = _rule(
    "media type",
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}",
    255,
)

T = TypeVar("T")


def int_(value: object, where: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadMessage(f"{where}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadMessage(f"{where}: {value} is outside [{lo}, {hi}]")
    return value


def float_(value: object, where: str, lo: float, hi: float) -> float:
    """A finite number in ``[lo, hi]``; integers are accepted and converted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadMessage(f"{where}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BadMessage(f"{where}: {number} is outside [{lo}, {hi}]")
    return number


def bool_(value: object, where: str) -> bool:
    """A msgpack boolean (not 0/1)."""
    if not isinstance(value, bool):
        raise BadMessage(f"{where}: expected a boolean, got {type(value).__name__}")
    return value


def str_(value: object, where: str, rule: Rule) -> str:
    """A string matching ``rule``."""
    if not isinstance(value, str):
        raise BadMessage(f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > rule.max_len or rule.pattern.fullmatch(value) is None:
        raise BadMessage(f"{where}: not a valid {rule.name}: {value[:80]!r}")
    return value


def digest(value: object, where: str) -> str:
    """An OCI digest string (``sha256:…`` or ``sha512:…``)."""
    return str_(value, where, DIGEST)


def bytes_(value: object, where: str, lo: int, hi: int) -> bytes:
    """A msgpack bin of ``lo`` to ``hi`` bytes."""
    if not isinstance(value, bytes):
        raise BadMessage(f"{where}: expected bytes, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise BadMessage(f"{where}: {len(value)} bytes, expected {lo} to {hi}")
    return value


def list_(value: object, where: str, max_len: int) -> list[object]:
    """An array of at most ``max_len`` items."""
    if not isinstance(value, list):
        raise BadMessage(f"{where}: expected an array, got {type(value).__name__}")
    if len(value) > max_len:
        raise BadMessage(f"{where}: {len(value)} items exceeds {max_len}")
    return value


class Fields:
    """Validating access to one decoded msgpack map."""

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[str, object]) -> None:
        self._raw = raw

    @classmethod
    def of(cls, raw: object, where: str) -> Fields:
        """Wrap ``raw``, which must be a map (msgpack's ``strict_map_key`` made keys str)."""
        if not isinstance(raw, dict):
            raise BadMessage(f"{where}: expected a map, got {type(raw).__name__}")
        return cls(raw)

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def get(self, key: str, valid: Callable[[object, str], T]) -> T:
        """Field ``key`` checked by ``valid``; a missing field is a ``BadMessage``."""
        try:
            value = self._raw[key]
        except KeyError:
            raise BadMessage(f"missing field {key!r}") from None
        return valid(value, key)
