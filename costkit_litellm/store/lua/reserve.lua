-- Increment counters, then hold an amount on every limit, all or nothing (nothing when a counter trips).
-- KEYS: [record, done] when ARGV[2] == '1', then one key per counter, then (S, L, A) per limit.
-- ARGV: now_ms|'', with_record, call_id, amount, lease_ms, record_ttl_ms, limits_spec,
--       counters (how many), then amount, ttl_ms|'', extend ('1'|'0'), trip_above|'' per counter,
--       then cap, window_end_ms (0 = none), rolling_window_ms, bucket_ms (0 = not rolling) per limit.
-- Every reply ends with the new value of each counter (counters are incremented first, whatever
-- happens next):
--         {1, committed, reserved, ..., counts} held (usage of every limit after the hold),
--         {4, counter_index (1-based), counts} a counter passed its trip_above (nothing else done),
--         {3, counts} the call id is already known (collision: nothing held),
--         {0, limit_index (1-based), committed, reserved, counts} refused (nothing held).
local now = now_ms(ARGV[1])
local with_record = ARGV[2] == '1'
local call_id, amount = ARGV[3], tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local lease_until = now + lease_ms
local k = tonumber(ARGV[8])
local first = 1
if with_record then
  first = 3
end
local counts, tripped = {}, nil
for i = 0, k - 1 do
  local base = 9 + 4 * i
  local v = incr_counter(KEYS[first + i], now, ARGV[base], ARGV[base + 1], ARGV[base + 2])
  counts[#counts + 1] = v
  if tripped == nil and ARGV[base + 3] ~= '' and v > tonumber(ARGV[base + 3]) then
    tripped = i + 1
  end
end
first = first + k
local limit_args = 9 + 4 * k
local n = (#KEYS - first + 1) / 3

local function reply(out)
  for _, v in ipairs(counts) do
    out[#out + 1] = v
  end
  return out
end

if tripped ~= nil then
  return reply({4, tripped})
end

local function limit_keys(i)
  return KEYS[first + 3 * i], KEYS[first + 3 * i + 1], KEYS[first + 3 * i + 2]
end

local function arg(i, j)
  return tonumber(ARGV[limit_args + 4 * i + j])
end

local windows = {}
for i = 0, n - 1 do
  local s, l, a = limit_keys(i)
  windows[i] = {refresh(s, l, a, now, arg(i, 2), arg(i, 3))}
end
if with_record and redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return reply({3})
end
-- usage before the hold, and how many times each limit is held (a key given twice holds twice)
local before, times, refused = {}, {}, nil
for i = 0, n - 1 do
  local s = limit_keys(i)
  local c, r = windows[i][4], windows[i][5]
  if c == nil or times[s] then  -- changed by its refresh, or a key given twice: read it
    c, r = usage_of(s)
  end
  if c + r + amount > arg(i, 0) then
    refused = i
    before[i] = {c, r}
    break
  end
  before[i] = {c, r}
  times[s] = (times[s] or 0) + 1
end
-- A lease of call_id already on a limit is a collision. Limit by limit, a collision answers before
-- a refusal of the same or a later limit: on a refusal look for one on the limits up to it; else
-- the holds' ZADD NX find it (and the leases added before it are taken back: nothing held).
if refused ~= nil then
  for i = 0, refused do
    local _, l = limit_keys(i)
    if redis.call('ZSCORE', l, call_id) then
      return reply({3})
    end
  end
  return reply({0, refused + 1, int(before[refused][1]), int(before[refused][2])})
end
local added = {}
for i = 0, n - 1 do
  local s, l = limit_keys(i)
  if not added[l] then  -- a key given twice: its second ZADD would change nothing
    if redis.call('ZADD', l, 'NX', lease_until, call_id) == 0 then
      for other in pairs(added) do
        redis.call('ZREM', other, call_id)
      end
      return reply({3})
    end
    added[l] = true
  end
end
local reserved = {}  -- S -> reserved after this script's holds so far
for i = 0, n - 1 do
  local s, l, a = limit_keys(i)
  local w, bl, x, _, _, m, m_stored = unpack(windows[i], 1, 7)
  redis.call('HSET', a, call_id, ARGV[4])
  local r = reserved[s] or before[i][2]
  local fields, window_end = bound_fields(lease_until, m, m_stored), arg(i, 1)
  -- when S gets an HSET anyway (m, or a new window end), r goes with it (HINCRBY's value)
  if (#fields > 0 or (window_end > 0 and x ~= window_end)) and exact_sum(r, amount) then
    fields[#fields + 1] = 'r'
    fields[#fields + 1] = int(r + amount)
  else
    redis.call('HINCRBY', s, 'r', ARGV[4])
  end
  reserved[s] = r + amount
  -- reserved before > 0: L and A held a lease already (S.r is the sum of A over L)
  set_window(s, l, a, window_end, now, x, before[i][2] > 0, fields)
  -- an expired lease is counted in the bucket of its expiry: keep the keys until it leaves
  set_rolling(s, l, a, w, bl, lease_ms + 2 * w)
end
if with_record then
  redis.call('HSET', KEYS[1], 'amount', ARGV[4], 'lease_until', int(lease_until), 'limits', ARGV[7])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
-- usage after the hold: the holds only added to reserved
local out = {1}
for i = 0, n - 1 do
  local s = limit_keys(i)
  out[#out + 1] = int(before[i][1])
  out[#out + 1] = int(before[i][2] + times[s] * amount)
end
return reply(out)
