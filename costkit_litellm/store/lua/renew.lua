-- Push a live reservation's lease back (a long stream), on its record and its limits.
-- KEYS: [record, done] when ARGV[2] == '1', then (S, L, A) per limit.
-- ARGV: now_ms|'', with_record, call_id, lease_ms, record_ttl_ms, limits_spec (must equal the
--       record's), then rolling_window_ms, bucket_ms per limit.
-- Returns 1 renewed, 0 unknown, finished or already expired, -1 the record changed.
local now = now_ms(ARGV[1])
local with_record = ARGV[2] == '1'
local call_id, lease_ms = ARGV[3], tonumber(ARGV[4])
local first = 1
if with_record then
  first = 3
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
  end
  local rec = redis.call('HMGET', KEYS[1], 'limits', 'lease_until')
  if not rec[1] then
    return 0
  end
  if rec[1] ~= ARGV[6] then
    return -1
  end
  if tonumber(rec[2]) <= now then
    return 0
  end
  redis.call('HSET', KEYS[1], 'lease_until', int(now + lease_ms))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local n = (#KEYS - first + 1) / 3
for i = 0, n - 1 do
  local s, l, a = KEYS[first + 3 * i], KEYS[first + 3 * i + 1], KEYS[first + 3 * i + 2]
  local w, bl, _, _, _, m, m_stored = refresh(s, l, a, now, tonumber(ARGV[7 + 2 * i]), tonumber(ARGV[8 + 2 * i]))
  if redis.call('ZADD', l, 'XX', 'CH', now + lease_ms, call_id) == 1 then
    -- a shorter lease moves S.m earlier (an S without m claims no bound)
    local fields = bound_fields(now + lease_ms, m, m_stored)
    if m_stored and #fields > 0 then
      redis.call('HSET', s, unpack(fields))
    end
    set_rolling(s, l, a, w, bl, lease_ms + 2 * w)
  end
end
return 1
