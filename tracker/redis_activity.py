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
from tracker.model import BlobDetail, HolderView, Policy, TransferView
from tracker.redis_admin import Info, peer_rows

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


def details(r: Any, prefix: str, policy: Policy, digests: Sequence[str]) -> dict[str, BlobDetail]:
    """``redis_admin.blob`` for many digests in two pipelines (the status page's holders)."""
    pipe = r.pipeline(transaction=False)
    for digest in digests:
        pipe.hget(prefix + "blobs", digest)
        pipe.smembers(prefix + "c:" + digest)
        pipe.hgetall(prefix + "i:" + digest)
    rows = pipe.execute()
    found = {}
    for n, digest in enumerate(digests):
        size, complete, partial = rows[3 * n : 3 * n + 3]
        if size is not None:
            found[digest] = (int(size), complete, partial)
    ids = sorted({i for _, c, part in found.values() for i in (*c, *part)})
    infos, seens, drains = peer_rows(r, prefix, policy, ids) if ids else ([], [], [])
    live = {
        i: (msgpack.unpackb(raw), seen, drain is not None)
        for i, raw, seen, drain in zip(ids, infos, seens, drains, strict=True)
        if raw is not None and seen is not None
    }
    out = {}
    for digest, (size, complete, partial) in found.items():
        holders = []
        for peer_id in sorted(complete) + sorted(set(partial) - set(complete)):
            if peer_id not in live:
                continue
            info, seen, draining = live[peer_id]
            done = peer_id in complete
            holders.append(_holder(peer_id, info, seen, draining, done, size, partial))
        out[digest] = BlobDetail(digest=digest, size=size, holders=tuple(holders))
    return out


def _holder(
    peer_id: bytes, i: Info, seen: float, draining: bool, done: bool, size: int, partial: Any
) -> HolderView:
    return HolderView(
        peer_id=peer_id.decode(),
        host=i[0],
        port=i[1],
        complete=done,
        bytes_held=size if done else int(partial[peer_id]),
        last_seen=seen,
        draining=draining,
    )
