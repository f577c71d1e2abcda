-- Committed and live-reserved amounts of limits (expired leases purged first).
-- KEYS: (S, L, A) per limit. ARGV: now_ms|''.
-- Returns {committed, reserved, ...} as decimal strings.
local now = now_ms(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  refresh(KEYS[i], KEYS[i + 1], KEYS[i + 2], now)
  local c, r = usage_of(KEYS[i])
  out[#out + 1] = int(c)
  out[#out + 1] = int(r)
end
return out
