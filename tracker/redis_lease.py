"""Lua scripts of the Redis store for origin-fetch leases (``Leases.lease`` in Redis).

``LEASE`` grants, renews, releases or refuses a lease or a run, ``LEASES_DONE`` ends the
writer's fetches of the pieces a hash record fills in (moving a run's cap entry on to the
rest of the run), and ``EXPIRE_LEASES`` (a Lua function, shared with
``tracker.redis_scripts``'s ``SWEEP``) drops expired leases. The scripts are registered
with the others through ``tracker.redis_scripts.SCRIPTS``; the keys they use
(``lease_holder``, ``leases``, ``bl:<digest>``, ``lease_soft``, ``lease_wanted``,
``lease_contended``, ``lc:<digest>``) are listed there; ``LEASE`` also reads ``pieces``,
``c:<digest>``, ``seen``, ``session`` and ``drain``.
"""

from __future__ import annotations

from typing import Final

#: ``expire_leases(P, now)``: drops the leases (and soft and wanted marks) that expired by
#: ``now``, and the contended blobs whose last mark ended by then (their ``lc:`` zsets).
EXPIRE_LEASES: Final = """
local function expire_leases(P, now)
  for _, dg in ipairs(redis.call('ZRANGEBYSCORE', P .. 'lease_contended', '-inf', now)) do
    redis.call('DEL', P .. 'lc:' .. dg)
  end
  local gone = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now)
  for _, m in ipairs(gone) do
    redis.call('HDEL', P .. 'lease_holder', m)
    redis.call('SREM', P .. 'lease_soft', m)
    redis.call('SREM', P .. 'lease_wanted', m)
  end
  redis.call('ZREMRANGEBYSCORE', P .. 'leases', '-inf', now)
  redis.call('ZREMRANGEBYSCORE', P .. 'lease_contended', '-inf', now)
end
"""

#: ARGV: P, member, peer, session, now, ttl, expires_at, max_leases, peer_ttl, digest,
#: index, max_origin_fetches (0: no cap), key lifetime (s), end of the run (exclusive,
#: ``min(index + count, MAX_PIECES)``), insist ("1" or "0"). Returns
#: {'granted', expires_at, count} | {'held', holder, expires_at}
#: | {'capped', holder, expires_at} | {'conflict'} | {'full'}.
#: Runs as in ``Leases.lease``; a release's count is the caller's to report. A lease whose
#: holder is not a live peer (by ``P seen`` and peer_ttl) is dropped, whether it is the
#: ``index`` asked for or a piece a run extends over (never the asker's own). A new lease
#: of a piece whose hash the blob's piece record holds is refused as {'capped', seeder, now}
#: while a live, not draining peer other than the asker is in ``c:<digest>`` (the smallest
#: id, by bytes: Python's str order for peer ids), unless insist, without contending.
LEASE: Final = (
    EXPIRE_LEASES
    + """
local P, member, peer, session = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local digest, first, stop = ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[14])
local seen = redis.call('ZSCORE', P .. 'seen', peer)
if seen and tonumber(seen) > now - tonumber(ARGV[9])
    and redis.call('HGET', P .. 'session', peer) ~= session then
  return {'conflict'}
end
local cur = redis.call('HGET', P .. 'lease_holder', member)
local exp = redis.call('ZSCORE', P .. 'leases', member)
local live = cur and exp and tonumber(exp) > now
local blob = P .. 'bl:' .. digest
local function unmark(m)
  redis.call('SREM', P .. 'lease_soft', m)
  redis.call('SREM', P .. 'lease_wanted', m)
end
local function drop(m, i)
  redis.call('HDEL', P .. 'lease_holder', m)
  redis.call('ZREM', P .. 'leases', m)
  redis.call('ZREM', blob, i)
  unmark(m)
end
local function contend()  -- a refusal (ttl > 0): no runs of the blob for other peers
  local marks = P .. 'lc:' .. digest  -- until expires_at, while the asker is live
  local mine = redis.call('ZSCORE', marks, peer)
  if not mine or tonumber(mine) < tonumber(ARGV[7]) then
    redis.call('ZADD', marks, ARGV[7], peer)
  end
  redis.call('EXPIRE', marks, ARGV[13])
  local busy = redis.call('ZSCORE', P .. 'lease_contended', digest)
  if not busy or tonumber(busy) < tonumber(ARGV[7]) then
    redis.call('ZADD', P .. 'lease_contended', ARGV[7], digest)
  end
end
local function gone(holder)  -- the holder is not a live peer (it left or expired)
  local at = redis.call('ZSCORE', P .. 'seen', holder)
  return not at or tonumber(at) <= now - tonumber(ARGV[9])
end
local cap = tonumber(ARGV[12])
local function capped()  -- the refusal of a new lease if the blob is at its cap, or nil
  if cap <= 0 then return nil end  -- (cap entries of departed holders do not count)
  redis.call('ZREMRANGEBYSCORE', blob, '-inf', ARGV[5])
  if redis.call('ZCARD', blob) < cap then return nil end
  local n, first = 0, nil
  local entries = redis.call('ZRANGE', blob, 0, -1, 'WITHSCORES')
  for k = 1, #entries, 2 do
    local h = redis.call('HGET', P .. 'lease_holder', digest .. '#' .. entries[k])
    if not h or h == peer or not gone(h) then
      n = n + 1
      if not first then first = {'capped', h, entries[k + 1]} end
    end
  end
  if n < cap then return nil end
  return first
end
if live and cur ~= peer then
  if gone(cur) then
    -- its holder left or expired: nobody is fetching the piece any more
    drop(member, ARGV[11])
    cur, live = false, false
  elseif ttl == 0 then
    return {'held', cur, exp}
  elseif redis.call('SISMEMBER', P .. 'lease_soft', member) == 0 then
    contend()
    return {'held', cur, exp}
  else
    contend()
    -- a soft piece: refused for now, and its holder asked to stop its run there (not
    -- while the blob is capped: the asker could not fetch it anyway)
    local refusal = capped()
    if refusal then return refusal end
    redis.call('SADD', P .. 'lease_wanted', member)
    return {'held', cur, ARGV[5]}
  end
end
if ttl == 0 then
  drop(member, ARGV[11])
  for i = first + 1, stop - 1 do
    local m = digest .. '#' .. i
    if redis.call('HGET', P .. 'lease_holder', m) == peer then drop(m, i) end
  end
  return {'granted', ARGV[5], 0}
end
-- The blob's piece record, if any: its bytes, piece count and the offset of piece 0's
-- bin (the record is [size, piece_size, [bin, ...]]: skip two uints to the array header;
-- each bin is 0xc4, a length byte and 0 or 32 bytes).
local function record()
  local rec = redis.call('HGET', P .. 'pieces', digest)
  if not rec then return nil end
  local function uint(pos)
    local b = string.byte(rec, pos)
    if b < 0x80 then return 1 elseif b == 0xcc then return 2 elseif b == 0xcd then return 3
    elseif b == 0xce then return 5 end
    return 9
  end
  local at = 2 + uint(2)
  at = at + uint(at)
  local a, n = string.byte(rec, at), 0
  if a == 0xdc then
    n, at = string.byte(rec, at + 1) * 256 + string.byte(rec, at + 2), at + 3
  elseif a == 0xdd then
    for k = 1, 4 do n = n * 256 + string.byte(rec, at + k) end
    at = at + 5
  else
    n, at = a - 0x90, at + 1
  end
  return rec, n, at
end
local function before(a, b)  -- a < b bytewise (not strcoll): Python's order for ids
  for k = 1, math.min(#a, #b) do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x < y end
  end
  return #a < #b
end
if not live and ARGV[15] ~= '1' then
  -- a recorded piece while another live peer holds the blob complete: take it from peers
  -- (refused as capped, naming the smallest such peer id; not a contention)
  local rec, n, at = record()
  if rec and first < n then
    for _ = 1, first do at = at + 2 + string.byte(rec, at + 1) end
    if string.byte(rec, at + 1) > 0 then
      local best
      for _, h in ipairs(redis.call('SMEMBERS', P .. 'c:' .. digest)) do
        if h ~= peer and (not best or before(h, best)) and not gone(h)
            and redis.call('HEXISTS', P .. 'drain', h) == 0 then
          best = h
        end
      end
      if best then return {'capped', best, ARGV[5]} end
    end
  end
end
if not live then
  local refusal = capped()
  if refusal then
    contend()
    return refusal
  end
end
local max = tonumber(ARGV[8])
if not cur and redis.call('ZCARD', P .. 'leases') >= max then
  expire_leases(P, ARGV[5])
  if redis.call('ZCARD', P .. 'leases') >= max then return {'full'} end
end
redis.call('HSET', P .. 'lease_holder', member, peer)
redis.call('ZADD', P .. 'leases', ARGV[7], member)
if live then  -- a renewal refreshes a cap entry, never makes one
  redis.call('ZADD', blob, 'XX', ARGV[7], ARGV[11])
else
  redis.call('ZADD', blob, ARGV[7], ARGV[11])
  unmark(member)  -- a new grant's first piece is hard
end
redis.call('EXPIRE', blob, ARGV[13])
local i = first + 1
if live then  -- renewal: the asker's live leases that follow, up to the first that is not
  while i < stop do  -- or that another peer wants (the cut: the holder stops there)
    local m = digest .. '#' .. i
    local e = redis.call('ZSCORE', P .. 'leases', m)
    if not e or tonumber(e) <= now or redis.call('HGET', P .. 'lease_holder', m) ~= peer
        or redis.call('SISMEMBER', P .. 'lease_wanted', m) == 1 then
      break
    end
    redis.call('ZADD', P .. 'leases', ARGV[7], m)
    redis.call('ZADD', blob, 'XX', ARGV[7], i)
    i = i + 1
  end
  return {'granted', ARGV[7], i - first}
end
if stop <= i then return {'granted', ARGV[7], 1} end
local function other(h)  -- a live peer other than the asker
  return h ~= peer and not gone(h)
end
local marks = P .. 'lc:' .. digest
redis.call('ZREMRANGEBYSCORE', marks, '-inf', ARGV[5])
for _, h in ipairs(redis.call('ZRANGE', marks, 0, -1)) do
  if other(h) then
    return {'granted', ARGV[7], 1}  -- another live peer was refused a lease of it lately
  end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', blob, '(' .. ARGV[5], '+inf')) do
  local h = redis.call('HGET', P .. 'lease_holder', digest .. '#' .. m)
  if not h or other(h) then
    return {'granted', ARGV[7], 1}  -- another live peer's origin fetch is in flight
  end
end
-- The blob's piece record, if any, ends the run at its piece count.
local rec, n = record()
if rec and n < stop then stop = n end
while i < stop do
  local m = digest .. '#' .. i
  local e = redis.call('ZSCORE', P .. 'leases', m)
  if e and tonumber(e) > now then
    local h = redis.call('HGET', P .. 'lease_holder', m)
    if h == peer or (h and not gone(h)) then break end
    drop(m, i)  -- its holder is gone: nobody fetches the piece any more
    e = false
  end
  if not e and redis.call('ZCARD', P .. 'leases') >= max then break end
  redis.call('HSET', P .. 'lease_holder', m, peer)
  redis.call('ZADD', P .. 'leases', ARGV[7], m)
  redis.call('ZREM', blob, i)  -- a stale cap entry of an expired lease
  redis.call('SREM', P .. 'lease_wanted', m)  -- a stale mark of one
  redis.call('SADD', P .. 'lease_soft', m)
  i = i + 1
end
return {'granted', ARGV[7], i - first}
"""
)

#: ARGV: P, digest, peer, flags ("1" at position i + 1 when the put recorded piece i).
#: The peer's leases of those pieces stop counting against the blob's cap and stop being
#: soft and wanted (they stay in ``leases`` until they expire); a cap entry removed moves on
#: to the first following piece that the peer's leases this put records lead to, if that
#: one is soft and the peer's (its run is still in flight), with that lease's expiry, as in
#: ``Leases._fetched``. Returns how many cap entries it removed (moved ones included).
LEASES_DONE: Final = """
local P, digest, peer, flags = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local blob = P .. 'bl:' .. digest
local function mine(i)
  return redis.call('HGET', P .. 'lease_holder', digest .. '#' .. i) == peer
end
local function recorded(i)  -- the put records piece i, and the peer leases it
  return string.sub(flags, i + 1, i + 1) == '1' and mine(i)
end
local n = 0
for _, m in ipairs(redis.call('ZRANGE', blob, 0, -1)) do
  local i = tonumber(m)
  if recorded(i) then
    -- the rest of its run is still in flight: it counts by its first unrecorded piece
    local after = i + 1
    while recorded(after) do after = after + 1 end
    local next_m = digest .. '#' .. after
    local e = redis.call('ZSCORE', P .. 'leases', next_m)
    if e and redis.call('SISMEMBER', P .. 'lease_soft', next_m) == 1 and mine(after) then
      redis.call('ZADD', blob, e, after)
    end
    redis.call('ZREM', blob, m)  -- after the ZADD: the key (and its TTL) stays
    n = n + 1
  end
end
local at = string.find(flags, '1', 1, true)
while at do
  local m = digest .. '#' .. (at - 1)
  if redis.call('SISMEMBER', P .. 'lease_soft', m) == 1
      and redis.call('HGET', P .. 'lease_holder', m) == peer then
    redis.call('SREM', P .. 'lease_soft', m)
    redis.call('SREM', P .. 'lease_wanted', m)
  end
  at = string.find(flags, '1', at + 1, true)
end
return n
"""
