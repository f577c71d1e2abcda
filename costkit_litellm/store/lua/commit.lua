-- Charge an amount with no reservation, once per call id.
-- KEYS: [marker] when ARGV[2] == '1', then (S, L, A) per limit.
-- ARGV: now_ms|'', with_marker, amount, marker_ttl_ms, then window_end_ms, rolling_window_ms,
--       bucket_ms per limit.
-- Returns 1 charged, 0 already charged.
local now = now_ms(ARGV[1])
local first = 1
if ARGV[2] == '1' then
  first = 2
  local until_ms = redis.call('GET', KEYS[1])
  if until_ms and tonumber(until_ms) > now then
    return 0
  end
  redis.call('SET', KEYS[1], int(now + tonumber(ARGV[4])), 'PX', ARGV[4])
end
local n = (#KEYS - first + 1) / 3
for i = 0, n - 1 do
  local s, l, a = KEYS[first + 3 * i], KEYS[first + 3 * i + 1], KEYS[first + 3 * i + 2]
  local w, bl, x = refresh(s, l, a, now, tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i]))
  add_committed(s, l, a, ARGV[3], tonumber(ARGV[5 + 3 * i]), now, w, bl, x)
end
return 1
