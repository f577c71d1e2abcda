-- Shared helpers, prepended to every costkit script at load time.
--
-- A limit is three keys sharing one hash tag: S (hash: c = committed, r = reserved,
-- x = window end in ms), L (zset: call_id scored by lease expiry in ms) and A (hash:
-- call_id -> reserved amount). Invariant: S.r == sum of A over the call ids in L.
-- A rolling limit also keeps in S: w = window ms, bl = bucket ms, b:<j> = spend committed in
-- bucket j (j = floor(now / bl)) and lo = the smallest j present; there c == sum of the b:<j>.
-- Bucket j counts while now < (j + 1) * bl + w: never less than w after the spend, at most one
-- bucket more. The three keys always carry the same TTL.
-- S may also hold m: a lower bound on every lease expiry in L, or -1 when L is empty; absent =
-- unknown (then refresh sweeps L and records it). Every script that adds a lease or moves one
-- earlier lowers m first, so m > now proves that no lease has expired (refresh skips the sweep).
-- Amounts travel as decimal strings and are written with integer commands
-- (HINCRBY); Lua numbers are doubles, exact up to 2^53.

-- Integers whose sums Lua's doubles hold exactly (HINCRBY's 64-bit range is wider).
local EXACT = 2 ^ 53
local floor, format = math.floor, string.format

-- Integers as decimal strings: Lua's default number formatting switches to exponents,
-- and '%.0f' of -0 gives '-0', which the integer commands reject. A whole number below 2^53
-- prints the same with '%d' (an integer conversion, about twice as fast as '%.0f').
local function int(x)
  if x == 0 then
    return '0'
  end
  if x > -EXACT and x < EXACT and x == floor(x) then
    return format('%d', x)
  end
  return format('%.0f', x)
end

-- The time in ms: the caller's clock when given, else the server's TIME.
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- True when a, b and their sum are exact in a double (then a + b is what HINCRBY would give).
local function exact_sum(a, b)
  local sum = a + b
  return a > -EXACT and a < EXACT and b > -EXACT and b < EXACT and sum > -EXACT and sum < EXACT
end

-- Add amount to a counter (hash: v = value, x = end in ms) and return its new value; the ttl (ms,
-- '' = none) is set on creation, and on every increment when extend is '1' (an inactivity timeout).
-- A counter past its end starts again. The new value is written with x in one HSET (as HINCRBY
-- would, while it is exact in a double).
local function incr_counter(key, now, amount, ttl, extend)
  local v = redis.call('HMGET', key, 'x', 'v')  -- a live counter always has v
  local x = tonumber(v[1] or '0')
  local created = not v[2]
  local old = tonumber(v[2] or '0')
  if x > 0 and now >= x then
    redis.call('DEL', key)
    created, old = true, 0
  end
  local add = tonumber(amount)
  local stamp = ttl ~= '' and (created or extend == '1')
  local value
  if old ~= nil and add ~= nil and exact_sum(old, add) then
    value = old + add
    if stamp then
      redis.call('HSET', key, 'v', int(value), 'x', int(now + tonumber(ttl)))
    else
      redis.call('HSET', key, 'v', int(value))
    end
  else
    value = redis.call('HINCRBY', key, 'v', amount)
    if stamp then
      redis.call('HSET', key, 'x', int(now + tonumber(ttl)))
    end
  end
  if stamp then
    redis.call('PEXPIRE', key, ttl)
  end
  return value
end

-- Committed and reserved of a (refreshed) limit, as numbers.
local function usage_of(s)
  local v = redis.call('HMGET', s, 'c', 'r')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end

-- Drop the buckets of a rolling limit that left its window, taking them out of c.
local function drop_buckets(s, w, bl, now)
  local lo = redis.call('HGET', s, 'lo')
  local keep = math.floor((now - w) / bl)
  if not lo or tonumber(lo) >= keep then
    return false
  end
  local all = redis.call('HGETALL', s)
  local gone, total, newlo = {}, 0, nil
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'b:' then
      local j = tonumber(string.sub(f, 3))
      if j < keep then
        gone[#gone + 1] = f
        total = total + tonumber(all[i + 1])
      elseif newlo == nil or j < newlo then
        newlo = j
      end
    end
  end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', s, unpack(gone, i, math.min(i + 999, #gone)))
  end
  redis.call('HINCRBY', s, 'c', int(-total))
  if newlo then
    redis.call('HSET', s, 'lo', int(newlo))
  else
    redis.call('HDEL', s, 'lo')
  end
  return true
end

-- Count spend in a rolling limit's bucket j (and in c).
local function add_to_bucket(s, j, amount)
  redis.call('HINCRBY', s, 'b:' .. int(j), int(amount))
  redis.call('HINCRBY', s, 'c', int(amount))
  local lo = redis.call('HGET', s, 'lo')
  if not lo or tonumber(lo) > j then
    redis.call('HSET', s, 'lo', int(j))
  end
end

-- Make a limit's state current: drop it when its window has ended, else turn expired leases
-- into committed spend (the provider may have billed: a crash can only make a limit stricter);
-- a rolling limit counts each in the bucket of its expiry and drops old buckets, and the whole
-- limit once nothing is committed in its window nor held. An expired lease leaves a marker
-- A['e:' .. call_id] = '<amount>:<bucket or -1>' so a late settle or release can correct it.
-- L is only searched for expired leases when S.m does not prove there are none; after a search
-- S.m is the earliest expiry left (-1: none).
-- w, bl: the caller's rolling window (nil or 0 = use the stored one, else (0, 0) = not rolling).
-- Returns the rolling window in force (0, 0 when none), the stored window end x (0: none, or
-- the state was dropped), which add_committed and set_window compare with the one they write,
-- committed and reserved after the refresh when it changed neither (else nil, nil: read them),
-- and m (the bound on L's lease expiries, -1: L is empty) with whether S holds it (hold_lease
-- lowers it).
local function refresh(s, l, a, now, w, bl)
  local stored = redis.call('HMGET', s, 'x', 'w', 'bl', 'c', 'r', 'm')
  local x = tonumber(stored[1] or '0')
  if x > 0 and now >= x then
    redis.call('DEL', s, l, a)
    return 0, 0, 0, 0, 0, -1, false
  end
  local changed = false
  if w == nil or w <= 0 then
    w, bl = tonumber(stored[2] or '0'), tonumber(stored[3] or '0')
  end
  -- S exists when it holds c or r (every write of a limit counts one of them). Without them there is
  -- no lease and nothing to write: a read of a limit never written (a refused reserve names every
  -- limit of the call, some made of ids the client chose) must leave no key behind. A hash holding
  -- m alone, left by such reads before, is deleted.
  if not (stored[4] or stored[5]) then
    if stored[6] then
      redis.call('DEL', s)
    end
    return w, bl, 0, 0, 0, -1, false
  end
  local keep = 0
  if w > 0 then
    keep = math.floor((now - w) / bl)
  end
  local m = tonumber(stored[6] or '')
  local m_stored = m ~= nil
  if m == nil or (m >= 0 and m <= now) then
    while true do
      local expired = redis.call('ZRANGEBYSCORE', l, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 500)
      if #expired == 0 then
        break
      end
      changed = true
      local ids = {}
      for i = 1, #expired, 2 do
        ids[#ids + 1] = expired[i]
      end
      local amounts = redis.call('HMGET', a, unpack(ids))
      local total, spent = 0, 0
      for i, id in ipairs(ids) do
        local v = tonumber(amounts[i] or '0')
        local j = -1
        total = total + v
        if w > 0 then
          j = math.floor(tonumber(expired[2 * i]) / bl)
          if j >= keep then
            add_to_bucket(s, j, v)
          end
        else
          spent = spent + v
        end
        redis.call('HSET', a, 'e:' .. id, int(v) .. ':' .. int(j))
      end
      redis.call('ZREM', l, unpack(ids))
      redis.call('HDEL', a, unpack(ids))
      redis.call('HINCRBY', s, 'r', int(-total))
      if spent ~= 0 then
        redis.call('HINCRBY', s, 'c', int(spent))
      end
    end
    local first = redis.call('ZRANGE', l, 0, 0, 'WITHSCORES')
    m = tonumber(first[2] or '-1')
    m_stored = true
    redis.call('HSET', s, 'm', first[2] or '-1')
  end
  local c, r = tonumber(stored[4] or '0'), tonumber(stored[5] or '0')
  if w > 0 then
    changed = drop_buckets(s, w, bl, now) or changed
    if changed then
      c, r = usage_of(s)
    end
    if c == 0 and r == 0 and (m < 0 or redis.call('ZCARD', l) == 0) then
      redis.call('DEL', s, l, a)
      return w, bl, 0, 0, 0, -1, false
    end
  end
  if changed then
    return w, bl, x, nil, nil, m, m_stored
  end
  return w, bl, x, c, r, m, m_stored
end

-- The fields that lower S.m for a new lease expiring at expiry ({} when S.m already bounds it);
-- m, m_stored: refresh's bound and whether S holds it.
local function bound_fields(expiry, m, m_stored)
  if m_stored and m >= 0 and m <= expiry then
    return {}
  end
  if m < 0 or expiry < m then
    m = expiry
  end
  return {'m', int(m)}
end

-- Correct an expired lease of call_id (counted as spent) to the actual amount, where it was
-- counted: a rolling limit's bucket while it is still in the window, never below zero.
-- Returns true when call_id had an expired lease on this limit.
local function correct_expired(s, a, call_id, actual, now, w, bl)
  local marker = redis.call('HGET', a, 'e:' .. call_id)
  if not marker then
    return false
  end
  redis.call('HDEL', a, 'e:' .. call_id)
  local sep = string.find(marker, ':', 1, true)
  local amount, j = tonumber(string.sub(marker, 1, sep - 1)), tonumber(string.sub(marker, sep + 1))
  local delta = actual - amount
  if delta == 0 then
    return true
  end
  if w > 0 and j >= 0 then
    if j < math.floor((now - w) / bl) then
      return true
    end
    local f = 'b:' .. int(j)
    local before = tonumber(redis.call('HGET', s, f) or '0')
    local after = math.max(0, before + delta)
    add_to_bucket(s, j, after - before)
  else
    local c = tonumber(redis.call('HGET', s, 'c') or '0')
    redis.call('HINCRBY', s, 'c', int(math.max(0, c + delta) - c))
  end
  return true
end

-- Give back call_id's lease on a limit, if it still holds one (true when it did). amount: the
-- lease's amount when the caller knows it (nil: read it).
local function unhold(s, l, a, call_id, amount)
  if redis.call('ZREM', l, call_id) == 1 then
    amount = amount or redis.call('HGET', a, call_id) or '0'
    redis.call('HDEL', a, call_id)
    redis.call('HINCRBY', s, 'r', int(-tonumber(amount)))
    return true
  end
  return false
end

-- Record a window end (ms, 0 = none) and let the keys expire with it. stored_x: the end S
-- already holds (refresh's third value; nil = unknown): S then already expires with it, and only
-- L and A (which a write may have just created) need their expiry, unless live is true: L and A
-- existed before this script wrote them, so they carry S's expiry (the three keys always do).
-- fields: more field-value pairs to write to S (appended to the HSET of x, or written alone).
local function set_window(s, l, a, x, now, stored_x, live, fields)
  fields = fields or {}
  if x > 0 then
    local ttl = int(math.max(x - now, 1))
    if stored_x ~= x then
      fields[#fields + 1] = 'x'
      fields[#fields + 1] = int(x)
      redis.call('HSET', s, unpack(fields))
      redis.call('PEXPIRE', s, ttl)
      live, fields = false, {}
    end
    if not live then
      redis.call('PEXPIRE', l, ttl)
      redis.call('PEXPIRE', a, ttl)
    end
  end
  if #fields > 0 then
    redis.call('HSET', s, unpack(fields))
  end
end

-- Record a rolling window (w, bl in ms; w = 0: none) and keep the keys alive for at least
-- ttl ms more (never shortening: all three keys get the longest TTL any of them has).
local function set_rolling(s, l, a, w, bl, ttl)
  if w > 0 then
    redis.call('HSET', s, 'w', int(w), 'bl', int(bl))
    for _, k in ipairs({s, l, a}) do
      ttl = math.max(ttl, redis.call('PTTL', k))
    end
    for _, k in ipairs({s, l, a}) do
      redis.call('PEXPIRE', k, int(ttl))
    end
  end
end

-- Add committed spend unless the limit's window is already over; a rolling limit (w > 0)
-- counts it in the bucket of now. stored_x: the window end S already holds (refresh's third
-- value; nil = unknown). When it is x, every key of the limit already expires with it: only
-- reserve creates L and A, and it always gives them the window's expiry.
local function add_committed(s, l, a, amount, x, now, w, bl, stored_x)
  if x > 0 and now >= x then
    return
  end
  if w > 0 then
    add_to_bucket(s, math.floor(now / bl), tonumber(amount))
    set_rolling(s, l, a, w, bl, 2 * w)
  else
    redis.call('HINCRBY', s, 'c', amount)
  end
  if stored_x ~= x then
    set_window(s, l, a, x, now)
  end
end
