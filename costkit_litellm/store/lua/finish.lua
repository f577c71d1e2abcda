-- Settle (commit the actual amount) or release a reservation, at most once.
-- KEYS: [record, done] when ARGV[2] == '1', then (S, L, A) per limit.
-- ARGV: now_ms|'', with_record, call_id, mode ('settle'|'release'), actual, done_ttl_ms,
--       limits_spec (must equal the record's; without the record: its lease_until ms), then window_end_ms, rolling_window_ms,
--       bucket_ms per limit.
-- Returns 1 done now, 0 unknown or already finished, -1 the record changed (read it again).
local now = now_ms(ARGV[1])
local with_record = ARGV[2] == '1'
local call_id, mode = ARGV[3], ARGV[4]
local first = 1
local lease_until = tonumber(ARGV[7]) or 0
if with_record then
  first = 3
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
  end
  local spec = redis.call('HGET', KEYS[1], 'limits')
  if not spec then
    return 0
  end
  if spec ~= ARGV[7] then
    return -1
  end
  lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  redis.call('SET', KEYS[2], mode, 'PX', ARGV[6])
  redis.call('DEL', KEYS[1])
end
local n = (#KEYS - first + 1) / 3
for i = 0, n - 1 do
  local s, l, a = KEYS[first + 3 * i], KEYS[first + 3 * i + 1], KEYS[first + 3 * i + 2]
  local w, bl = refresh(s, l, a, now, tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i]))
  local actual = 0
  if mode == 'settle' then
    actual = tonumber(ARGV[5])
  end
  -- A live lease: commit now. An expired one: correct it where it was counted as spent; if
  -- that count is gone (its bucket or window ended), there is nothing to correct. Under a live
  -- lease whose limit was reset, the settle still commits.
  if unhold(s, l, a, call_id) then
    if mode == 'settle' then
      add_committed(s, l, a, ARGV[5], tonumber(ARGV[8 + 3 * i]), now, w, bl)
    end
  elseif not correct_expired(s, a, call_id, actual, now, w, bl) and lease_until > now and mode == 'settle' then
    add_committed(s, l, a, ARGV[5], tonumber(ARGV[8 + 3 * i]), now, w, bl)
  end
end
return 1
