-- Hold an amount on every limit, all or nothing.
-- KEYS: [record, done] when ARGV[2] == '1', then (S, L, A) per limit.
-- ARGV: now_ms|'', with_record, call_id, amount, lease_ms, record_ttl_ms, limits_spec,
--       then cap, window_end_ms (0 = none), rolling_window_ms, bucket_ms (0 = not rolling)
--       per limit.
-- Returns {1, committed, reserved, ...} held (usage of every limit after the hold),
--         {3} the call id is already known (collision: nothing changed),
--         {0, limit_index (1-based), committed, reserved} refused (nothing changed).
local now = now_ms(ARGV[1])
local with_record = ARGV[2] == '1'
local call_id, amount = ARGV[3], tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local lease_until = now + lease_ms
local first = 1
if with_record then
  first = 3
end
local n = (#KEYS - first + 1) / 3

local function limit_keys(i)
  return KEYS[first + 3 * i], KEYS[first + 3 * i + 1], KEYS[first + 3 * i + 2]
end

local function arg(i, k)
  return tonumber(ARGV[8 + 4 * i + k])
end

local function usages(status)
  local out = {status}
  for i = 0, n - 1 do
    local s = limit_keys(i)
    local c, r = usage_of(s)
    out[#out + 1] = int(c)
    out[#out + 1] = int(r)
  end
  return out
end

local windows = {}
for i = 0, n - 1 do
  local s, l, a = limit_keys(i)
  local w, bl = refresh(s, l, a, now, arg(i, 2), arg(i, 3))
  windows[i] = {w, bl}
end
if with_record and (redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1) then
  return {3}
end
for i = 0, n - 1 do
  local s, l = limit_keys(i)
  if redis.call('ZSCORE', l, call_id) then
    return {3}
  end
  local c, r = usage_of(s)
  if c + r + amount > arg(i, 0) then
    return {0, i + 1, int(c), int(r)}
  end
end
for i = 0, n - 1 do
  local s, l, a = limit_keys(i)
  redis.call('ZADD', l, lease_until, call_id)
  redis.call('HSET', a, call_id, ARGV[4])
  redis.call('HINCRBY', s, 'r', ARGV[4])
  set_window(s, l, a, arg(i, 1), now)
  local w, bl = windows[i][1], windows[i][2]
  -- an expired lease is counted in the bucket of its expiry: keep the keys until it leaves
  set_rolling(s, l, a, w, bl, lease_ms + 2 * w)
end
if with_record then
  redis.call('HSET', KEYS[1], 'amount', ARGV[4], 'lease_until', int(lease_until), 'limits', ARGV[7])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return usages(1)
