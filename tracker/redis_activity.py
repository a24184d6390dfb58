"""The dashboard's memory in Redis: recent errors, traffic points, transfer progress.

The Redis twin of :class:`tracker.activity.Activity`, with the same caps and the same
decisions (:func:`~tracker.activity.progress_step` is mirrored by ``PROGRESS`` and
:func:`~tracker.activity.due` by ``SAMPLE``), so the memory and Redis stores answer alike
(the parity tests in ``tests/tracker/test_redis_store.py`` check it). Functions here are
blocking; ``RedisStore`` runs them in a worker thread. Keys (``P`` is the prefix)::

    P errors        list    msgpack [at, source, kind, message], newest first, capped
    P traffic       list    msgpack [at, from_origin, from_peers], oldest first, capped
    P traffic_at    string  time of the last traffic point
    P prog:<peer>   hash    digest -> "<bytes held> <last progress>"; the key expires
                            ``progress_ttl`` seconds after the peer's last announce
                            that listed a download (Redis' own clock)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgpack

from tracker import protocol as p
from tracker.activity import MAX_ERRORS, MAX_POINTS, ErrorEvent, TrafficPoint
from tracker.model import TransferView

#: Rewrite one peer's progress hash; ARGV: P, peer id, now, ttl, then digest, held pairs.
PROGRESS: Final = """
local P, id, now, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local key = P .. 'prog:' .. id
local old = {}
local flat = redis.call('HGETALL', key)
for j = 1, #flat, 2 do old[flat[j]] = flat[j + 1] end
redis.call('DEL', key)
for j = 5, #ARGV, 2 do
  local d, held = ARGV[j], ARGV[j + 1]
  local value = held .. ' ' .. now
  local prev = old[d]
  if prev and string.sub(prev, 1, string.find(prev, ' ', 1, true) - 1) == held then
    value = prev
  end
  redis.call('HSET', key, d, value)
end
redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
return 1
"""

#: Append a traffic point unless the last is younger than the interval.
#: ARGV: P, now, interval, packed point, max points.
SAMPLE: Final = """
local P, now, interval, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local last = redis.call('GET', P .. 'traffic_at')
if last and now - tonumber(last) < interval then return 0 end
redis.call('SET', P .. 'traffic_at', ARGV[2])
redis.call('RPUSH', P .. 'traffic', ARGV[4])
redis.call('LTRIM', P .. 'traffic', 0 - max, -1)
return 1
"""

SCRIPTS: Final = {"PROGRESS": PROGRESS, "SAMPLE": SAMPLE}


def progress_args(
    prefix: str, peer_id: str, held: Sequence[tuple[str, int]], now: float, ttl: float
) -> list[object]:
    """ARGV of ``PROGRESS`` (the caller skips the script when ``held`` is empty)."""
    args: list[object] = [prefix, peer_id, repr(now), repr(ttl)]
    for digest, n in held:
        args += [digest, str(n)]
    return args


def sample_args(prefix: str, point: TrafficPoint, interval: float) -> list[object]:
    """ARGV of ``SAMPLE``."""
    packed = msgpack.packb([point.at, point.bytes_from_origin, point.bytes_from_peers])
    return [prefix, repr(point.at), repr(interval), packed, MAX_POINTS]


def note_errors(r: Any, prefix: str, events: Sequence[ErrorEvent]) -> None:
    """Push ``events`` (oldest first) and trim the list to ``MAX_ERRORS``."""
    if not events:
        return
    pipe = r.pipeline(transaction=True)
    for e in events:
        pipe.lpush(prefix + "errors", msgpack.packb([e.at, e.source, e.kind, e.message]))
    pipe.ltrim(prefix + "errors", 0, MAX_ERRORS - 1)
    pipe.execute()


def errors(r: Any, prefix: str, limit: int) -> list[ErrorEvent]:
    """At most ``limit`` recent errors, newest first."""
    rows = r.lrange(prefix + "errors", 0, min(limit, MAX_ERRORS) - 1)
    out = []
    for raw in rows:
        at, source, kind, message = msgpack.unpackb(raw)
        out.append(ErrorEvent(at=at, source=source, kind=kind, message=message))
    return out


def traffic(r: Any, prefix: str) -> list[TrafficPoint]:
    """Every stored traffic point, oldest first."""
    out = []
    for raw in r.lrange(prefix + "traffic", 0, -1):
        at, origin, peers = msgpack.unpackb(raw)
        out.append(TrafficPoint(at=at, bytes_from_origin=origin, bytes_from_peers=peers))
    return out


def with_progress(r: Any, prefix: str, views: list[TransferView]) -> list[TransferView]:
    """``views`` with ``last_progress`` filled in from the peers' progress hashes."""
    if not views:
        return views
    pipe = r.pipeline(transaction=False)
    for v in views:
        pipe.hget(prefix + "prog:" + v.peer_id, v.digest)
    out = []
    for v, raw in zip(views, pipe.execute(), strict=True):
        at = None if raw is None else float(raw.split(b" ", 1)[1])
        out.append(
            TransferView(
                peer_id=v.peer_id,
                digest=v.digest,
                size=v.size,
                bytes_held=v.bytes_held,
                last_progress=at,
            )
        )
    return out


def recent_tags(r: Any, prefix: str, limit: int) -> list[p.TagRecord]:
    """At most ``limit`` tag resolutions, most recently updated first."""
    keys = r.zrevrange(prefix + "tags_order", 0, limit - 1)
    if not keys:
        return []
    return [p.decode(p.TagRecord, raw) for raw in r.hmget(prefix + "tags", keys) if raw]
