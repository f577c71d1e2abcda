-- Add to a counter (hash: v = value, x = end in ms); the ttl is set on creation, and on every
-- increment when extend is '1' (an inactivity timeout).
-- KEYS: [counter]. ARGV: now_ms|'', amount, ttl_ms|'', extend ('1'|'0'|absent).
local now = now_ms(ARGV[1])
local x = tonumber(redis.call('HGET', KEYS[1], 'x') or '0')
if x > 0 and now >= x then
  redis.call('DEL', KEYS[1])
end
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('HINCRBY', KEYS[1], 'v', ARGV[2])
if ARGV[3] ~= '' and (created or ARGV[4] == '1') then
  redis.call('HSET', KEYS[1], 'x', int(now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return value
