-- Cluster mode, before reserving: is the call finished or holding a live lease?
-- KEYS: [record, done]. ARGV: now_ms|''.
-- Returns 2 (finished or live: do not hold again) or 0.
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 2
end
local held_until = redis.call('HGET', KEYS[1], 'lease_until')
if held_until and tonumber(held_until) > now then
  return 2
end
return 0
