-- Shared helpers, prepended to every costkit script at load time.
--
-- A limit is three keys sharing one hash tag: S (hash: c = committed, r = reserved,
-- x = window end in ms), L (zset: call_id scored by lease expiry in ms) and A (hash:
-- call_id -> reserved amount). Invariant: S.r == sum of A over the call ids in L.
-- Amounts travel as decimal strings and are written with integer commands
-- (HINCRBY); Lua numbers are doubles, exact up to 2^53.

-- Integers as decimal strings: Lua's default number formatting switches to exponents,
-- and '%.0f' of -0 gives '-0', which the integer commands reject.
local function int(x)
  if x == 0 then
    return '0'
  end
  return string.format('%.0f', x)
end

-- The time in ms: the caller's clock when given, else the server's TIME.
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Make a limit's state current: drop it when its window has ended, else purge expired
-- leases (giving their amounts back).
local function refresh(s, l, a, now)
  local x = tonumber(redis.call('HGET', s, 'x') or '0')
  if x > 0 and now >= x then
    redis.call('DEL', s, l, a)
    return
  end
  while true do
    local expired = redis.call('ZRANGEBYSCORE', l, '-inf', now, 'LIMIT', 0, 500)
    if #expired == 0 then
      return
    end
    local amounts = redis.call('HMGET', a, unpack(expired))
    local total = 0
    for _, v in ipairs(amounts) do
      if v then
        total = total + tonumber(v)
      end
    end
    redis.call('ZREM', l, unpack(expired))
    redis.call('HDEL', a, unpack(expired))
    redis.call('HINCRBY', s, 'r', int(-total))
  end
end

-- Committed and reserved of a (refreshed) limit, as numbers.
local function usage_of(s)
  local v = redis.call('HMGET', s, 'c', 'r')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end

-- Give back call_id's lease on a limit, if it still holds one.
local function unhold(s, l, a, call_id)
  if redis.call('ZREM', l, call_id) == 1 then
    local amount = redis.call('HGET', a, call_id) or '0'
    redis.call('HDEL', a, call_id)
    redis.call('HINCRBY', s, 'r', int(-tonumber(amount)))
  end
end

-- Record a window end (ms, 0 = none) and let the keys expire with it.
local function set_window(s, l, a, x, now)
  if x > 0 then
    redis.call('HSET', s, 'x', int(x))
    local ttl = int(math.max(x - now, 1))
    redis.call('PEXPIRE', s, ttl)
    redis.call('PEXPIRE', l, ttl)
    redis.call('PEXPIRE', a, ttl)
  end
end

-- Add committed spend unless the limit's window is already over.
local function add_committed(s, l, a, amount, x, now)
  if x > 0 and now >= x then
    return
  end
  redis.call('HINCRBY', s, 'c', amount)
  set_window(s, l, a, x, now)
end
