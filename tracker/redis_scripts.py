"""Lua scripts of the Redis store: each mutation runs atomically inside Redis.

Running the read-check-write of an announce, a leave or a lease as one script makes
concurrent tracker replicas safe without WATCH retries, and costs one round trip.

Key layout (``P`` is the store's prefix, ``shoal:`` by default)::

    P seen             zset   peer id -> last announce (Unix seconds)
    P session          hash   peer id -> session bytes
    P info             hash   peer id -> msgpack [host, port, slots, load, served,
                                                  from_origin, from_peers, held, in_progress]
    P drain            hash   peer id -> "1" while an operator drains it
    P bans             hash   peer id -> ban end (Unix seconds)
    P pb:<peer id>     hash   digest -> "c" (complete) or bytes held (in progress)
    P blobs            hash   digest -> size (first announced)
    P c:<digest>       set    peer ids holding the blob completely
    P i:<digest>       hash   peer id -> bytes held (in progress)
    P holdings         string number of (peer, blob) entries
    P pieces           hash   digest -> msgpack [size, piece_size, [hash, ...]], each hash
                              a bin of 32 bytes, or of 0 while that piece is unknown
    P pieces_by        hash   digest -> peer id that first recorded it
    P pieces_cost      hash   digest -> bytes charged against max_piece_bytes
    P pieces_order     zset   digest -> update sequence (oldest evicted first)
    P piece_bytes      string sum of pieces_cost
    P conflicts        hash   digest -> conflicting puts seen
    P tags             hash   tag key -> msgpack TagRecord (protocol encoding)
    P tags_at          hash   tag key -> resolved_at
    P tags_digest      hash   tag key -> digest (for forgetting a blob)
    P tags_order       zset   tag key -> update sequence (oldest evicted first)
    P lease_holder     hash   "digest#index" -> peer id
    P leases           zset   "digest#index" -> expiry (Unix seconds)
    P bl:<digest>      zset   piece index -> expiry, the blob's leases that count against
                              the cap on origin fetches in flight (a run's first
                              unrecorded piece only; pruned as it is read, and expiring
                              MAX_LEASE_TTL after its last grant)
    P lease_soft       set    "digest#index" of the soft leases (a run's extended pieces
                              whose hash their holder has not recorded; preemptible)
    P lease_wanted     set    "digest#index" of the soft leases another peer asked for
                              (the holder's next renewal stops its run at the first)
    P lease_contended  zset   digest -> the latest until of its lc: marks (the index the
                              sweep trims, deleting lc:<digest> with it)
    P lc:<digest>      zset   peer id -> until when a lease of the blob was last refused
                              to it (now + its ttl; no runs for other peers before while
                              it is live; pruned as read, expiring MAX_LEASE_TTL after)
    P seq              string sequence for the *_order zsets

The scripts touch keys they compute from ARGV, so they need a standalone Redis (or one
hash slot), not Redis Cluster.
"""

from __future__ import annotations

from typing import Final

from tracker.redis_lease import EXPIRE_LEASES
from tracker.redis_lease import LEASE as LEASE
from tracker.redis_lease import LEASES_DONE as LEASES_DONE

#: Names of the scripts below (``LEASE`` and ``LEASES_DONE`` live in ``tracker.redis_lease``),
#: registered by ``RedisStore``.
SCRIPTS: Final = (
    "ANNOUNCE", "LEAVE", "SWEEP", "BAN", "LEASE", "LEASES_DONE", "PUT_PIECES", "PUT_TAG", "FORGET",
)  # fmt: skip

_COMMON: Final = (
    """
local function unlink(P, id, d, complete)
  if complete then
    redis.call('SREM', P .. 'c:' .. d, id)
  else
    redis.call('HDEL', P .. 'i:' .. d, id)
  end
  if redis.call('SCARD', P .. 'c:' .. d) == 0 and redis.call('HLEN', P .. 'i:' .. d) == 0 then
    redis.call('HDEL', P .. 'blobs', d)
  end
end

local function remove_peer(P, id)
  local key = P .. 'pb:' .. id
  local old = redis.call('HGETALL', key)
  for j = 1, #old, 2 do
    unlink(P, id, old[j], old[j + 1] == 'c')
  end
  redis.call('DEL', key)
  redis.call('INCRBY', P .. 'holdings', 0 - #old / 2)
  redis.call('ZREM', P .. 'seen', id)
  redis.call('HDEL', P .. 'session', id)
  redis.call('HDEL', P .. 'info', id)
  redis.call('HDEL', P .. 'drain', id)
end

local function sweep(P, deadline, max)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'seen', '-inf', deadline, 'LIMIT', 0, max)
  for _, id in ipairs(ids) do
    remove_peer(P, id)
  end
  return #ids
end
"""
    + EXPIRE_LEASES
)

#: ARGV: P, id, session, now, ttl, gap, max_peers, max_holdings, info,
#: n_held, (digest, size)*, n_partial, (digest, size, bytes_held)*.
#: Returns {'ok', draining} | {'banned'} | {'conflict'} | {'slow', wait} | {'full', what}.
ANNOUNCE: Final = (
    _COMMON
    + """
local P, id, session = ARGV[1], ARGV[2], ARGV[3]
local now, ttl, gap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local maxp, maxh = tonumber(ARGV[7]), tonumber(ARGV[8])
local banned = redis.call('HGET', P .. 'bans', id)
if banned then
  if tonumber(banned) > now then return {'banned'} end
  redis.call('HDEL', P .. 'bans', id)
end
local seen = redis.call('ZSCORE', P .. 'seen', id)
if seen and tonumber(seen) <= now - ttl then
  remove_peer(P, id)
  seen = false
end
if seen then
  if redis.call('HGET', P .. 'session', id) ~= session then return {'conflict'} end
  local wait = tonumber(seen) + gap - now
  if wait > 0 then return {'slow', tostring(wait)} end
elseif redis.call('ZCARD', P .. 'seen') >= maxp then
  sweep(P, now - ttl, 1000)
  if redis.call('ZCARD', P .. 'seen') >= maxp then return {'full', 'peers'} end
end
local new, n, i = {}, 0, 11
for _ = 1, tonumber(ARGV[10]) do
  if not new[ARGV[i]] then n = n + 1 end
  new[ARGV[i]] = {'c', ARGV[i + 1]}
  i = i + 2
end
local npart = tonumber(ARGV[i])
i = i + 1
for _ = 1, npart do
  if not new[ARGV[i]] then
    new[ARGV[i]] = {ARGV[i + 2], ARGV[i + 1]}
    n = n + 1
  end
  i = i + 3
end
local key = P .. 'pb:' .. id
local before = redis.call('HLEN', key)
local total = tonumber(redis.call('GET', P .. 'holdings') or '0')
if total - before + n > maxh then return {'full', 'holdings'} end
local old = redis.call('HGETALL', key)
local kept = {}
for j = 1, #old, 2 do
  local d, v = old[j], old[j + 1]
  local nv = new[d]
  if not nv or ((nv[1] == 'c') ~= (v == 'c')) then
    unlink(P, id, d, v == 'c')
    redis.call('HDEL', key, d)
  else
    kept[d] = v
  end
end
for d, nv in pairs(new) do
  local v = kept[d]
  if v == nil then
    redis.call('HSETNX', P .. 'blobs', d, nv[2])
    if nv[1] == 'c' then
      redis.call('SADD', P .. 'c:' .. d, id)
    else
      redis.call('HSET', P .. 'i:' .. d, id, nv[1])
    end
    redis.call('HSET', key, d, nv[1])
  elseif v ~= nv[1] then
    redis.call('HSET', P .. 'i:' .. d, id, nv[1])
    redis.call('HSET', key, d, nv[1])
  end
end
redis.call('INCRBY', P .. 'holdings', n - before)
redis.call('ZADD', P .. 'seen', ARGV[4], id)
redis.call('HSET', P .. 'session', id, session)
redis.call('HSET', P .. 'info', id, ARGV[9])
return {'ok', redis.call('HEXISTS', P .. 'drain', id)}
"""
)

#: ARGV: P, id, session, now, ttl. Returns 'ok' or 'conflict'.
LEAVE: Final = (
    _COMMON
    + """
local P, id, session = ARGV[1], ARGV[2], ARGV[3]
local seen = redis.call('ZSCORE', P .. 'seen', id)
if not seen then return 'ok' end
if tonumber(seen) > tonumber(ARGV[4]) - tonumber(ARGV[5])
    and redis.call('HGET', P .. 'session', id) ~= session then
  return 'conflict'
end
remove_peer(P, id)
return 'ok'
"""
)

#: ARGV: P, deadline, max, now. Removes expired peers and leases; returns peers removed.
SWEEP: Final = (
    _COMMON
    + """
expire_leases(ARGV[1], ARGV[4])
return sweep(ARGV[1], ARGV[2], tonumber(ARGV[3]))
"""
)

#: ARGV: P, id, ban end. Records the ban and forgets the peer.
BAN: Final = (
    _COMMON
    + """
redis.call('HSET', ARGV[1] .. 'bans', ARGV[2], ARGV[3])
remove_peer(ARGV[1], ARGV[2])
return 'ok'
"""
)

#: ARGV: P, digest, content, peer, cost, max_bytes, head. Returns {stored, conflict}.
#:
#: Merges into an existing record piece by piece, like ``Records.put_pieces``. Redis's
#: ``cmsgpack`` cannot read msgpack bin values, so the script walks the bytes itself:
#: ``content`` is ``head`` bytes of [size, piece_size and the array header], then one
#: bin 8 per piece (0xc4, its length 0 or 32, the hash). Equal heads mean the same size,
#: piece size and piece count; then both lists are walked in step.
PUT_PIECES: Final = """
local P, d, content = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', P .. 'pieces', d)
if cur then
  if cur == content then return {0, 0} end
  local head = tonumber(ARGV[7])
  local out, filled, conflict = {string.sub(cur, 1, head)}, 0, 0
  if out[1] ~= string.sub(content, 1, head) then
    conflict = 1
  else
    local i, j = head + 1, head + 1
    while i <= #cur do
      local a, b = string.byte(cur, i + 1), string.byte(content, j + 1)
      local old, new = string.sub(cur, i, i + 1 + a), string.sub(content, j, j + 1 + b)
      if a == 0 and b > 0 then
        out[#out + 1] = new
        filled = filled + 1
      else
        out[#out + 1] = old
        if a > 0 and b > 0 and old ~= new then conflict = 1 end
      end
      i, j = i + 2 + a, j + 2 + b
    end
  end
  if conflict == 1 then redis.call('HINCRBY', P .. 'conflicts', d, 1) end
  if filled > 0 then
    redis.call('HSET', P .. 'pieces', d, table.concat(out))
    redis.call('ZADD', P .. 'pieces_order', redis.call('INCR', P .. 'seq'), d)
    return {1, conflict}
  end
  return {0, conflict}
end
local cost = tonumber(ARGV[5])
local total = tonumber(redis.call('GET', P .. 'piece_bytes') or '0')
while total + cost > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', P .. 'pieces_order', 0, 0)
  if #oldest == 0 then break end
  local o = oldest[1]
  total = total - tonumber(redis.call('HGET', P .. 'pieces_cost', o) or '0')
  redis.call('ZREM', P .. 'pieces_order', o)
  for _, h in ipairs({'pieces', 'pieces_by', 'pieces_cost', 'conflicts'}) do
    redis.call('HDEL', P .. h, o)
  end
end
redis.call('HSET', P .. 'pieces', d, content)
redis.call('HSET', P .. 'pieces_by', d, ARGV[4])
redis.call('HSET', P .. 'pieces_cost', d, cost)
redis.call('ZADD', P .. 'pieces_order', redis.call('INCR', P .. 'seq'), d)
redis.call('SET', P .. 'piece_bytes', total + cost)
return {1, 0}
"""

#: ARGV: P, key, record, resolved_at, max_tags, digest. Returns 1 if stored.
PUT_TAG: Final = """
local P, key = ARGV[1], ARGV[2]
local at = redis.call('HGET', P .. 'tags_at', key)
if at and tonumber(at) >= tonumber(ARGV[4]) then return 0 end
if not at then
  while redis.call('HLEN', P .. 'tags') >= tonumber(ARGV[5]) do
    local oldest = redis.call('ZRANGE', P .. 'tags_order', 0, 0)
    if #oldest == 0 then break end
    redis.call('ZREM', P .. 'tags_order', oldest[1])
    for _, h in ipairs({'tags', 'tags_at', 'tags_digest'}) do
      redis.call('HDEL', P .. h, oldest[1])
    end
  end
end
redis.call('HSET', P .. 'tags', key, ARGV[3])
redis.call('HSET', P .. 'tags_at', key, ARGV[4])
redis.call('HSET', P .. 'tags_digest', key, ARGV[6])
redis.call('ZADD', P .. 'tags_order', redis.call('INCR', P .. 'seq'), key)
return 1
"""

#: ARGV: P, digest. Forgets holders and piece hashes; returns 1 if anything was known.
FORGET: Final = """
local P, d = ARGV[1], ARGV[2]
local ids = redis.call('SMEMBERS', P .. 'c:' .. d)
local part = redis.call('HKEYS', P .. 'i:' .. d)
-- Keep each holder's counts in its info row exact (field 8: held, field 9: in progress).
local function uncount(id, field)
  redis.call('HDEL', P .. 'pb:' .. id, d)
  local raw = redis.call('HGET', P .. 'info', id)
  if raw then
    local info = cmsgpack.unpack(raw)
    info[field] = info[field] - 1
    redis.call('HSET', P .. 'info', id, cmsgpack.pack(info))
  end
end
for _, id in ipairs(ids) do uncount(id, 8) end
for _, id in ipairs(part) do uncount(id, 9) end
redis.call('INCRBY', P .. 'holdings', 0 - #ids - #part)
redis.call('DEL', P .. 'c:' .. d, P .. 'i:' .. d)
local found = redis.call('HDEL', P .. 'blobs', d)
local cost = redis.call('HGET', P .. 'pieces_cost', d)
if cost then
  redis.call('DECRBY', P .. 'piece_bytes', cost)
  found = 1
end
redis.call('ZREM', P .. 'pieces_order', d)
for _, h in ipairs({'pieces', 'pieces_by', 'pieces_cost', 'conflicts'}) do
  redis.call('HDEL', P .. h, d)
end
return found
"""
