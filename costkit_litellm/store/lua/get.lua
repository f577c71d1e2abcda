-- A counter's value, 0 when absent or past its end.
-- KEYS: [counter]. ARGV: now_ms|''.
local now = now_ms(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'v', 'x')
if not v[1] then
  return 0
end
if v[2] and now >= tonumber(v[2]) then
  return 0
end
return tonumber(v[1])
