-- Cluster mode, first half of settle/release: mark a call finished and hand back its limits.
-- KEYS: [record, done]. ARGV: mode, done_ttl_ms.
-- Returns {limits spec, lease_until ms}, or {'', '0'} when unknown or already finished.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'', '0'}
end
local rec = redis.call('HMGET', KEYS[1], 'limits', 'lease_until')
if not rec[1] then
  return {'', '0'}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return {rec[1], rec[2] or '0'}
