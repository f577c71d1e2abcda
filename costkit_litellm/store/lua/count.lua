-- Add to several counters at once (as incr.lua, one after the other).
-- KEYS: counters. ARGV: now_ms|'', then amount, ttl_ms|'', extend ('1'|'0') per counter.
-- Returns the new value of every counter, in order.
local now = now_ms(ARGV[1])
local out = {}
for i = 1, #KEYS do
  out[i] = incr_counter(KEYS[i], now, ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1])
end
return out
