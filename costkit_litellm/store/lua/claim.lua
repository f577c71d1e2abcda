-- True (1) the first time a token is claimed within its ttl.
-- KEYS: [token]. ARGV: now_ms|'', ttl_ms. The value is the claim's end in ms, so an injected
-- clock decides expiry too; PX lets Redis drop it.
local now = now_ms(ARGV[1])
local until_ms = redis.call('GET', KEYS[1])
if until_ms and tonumber(until_ms) > now then
  return 0
end
redis.call('SET', KEYS[1], int(now + tonumber(ARGV[2])), 'PX', ARGV[2])
return 1
