-- Committed and live-reserved amounts of limits (expired leases and old buckets purged first).
-- KEYS: (S, L, A) per limit. ARGV: now_ms|'', then rolling_window_ms, bucket_ms per limit
-- (0 = the stored window, if any).
-- Returns {committed, reserved, exists (1|0), ...} as decimal strings.
local now = now_ms(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  local k = (i - 1) / 3
  refresh(KEYS[i], KEYS[i + 1], KEYS[i + 2], now, tonumber(ARGV[2 + 2 * k]), tonumber(ARGV[3 + 2 * k]))
  local c, r = usage_of(KEYS[i])
  out[#out + 1] = int(c)
  out[#out + 1] = int(r)
  out[#out + 1] = int(redis.call('EXISTS', KEYS[i]))
end
return out
