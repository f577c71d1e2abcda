-- Cluster mode, first half of settle/release: mark a call finished and hand back its limits.
-- KEYS: [record, done]. ARGV: mode, done_ttl_ms.
-- Returns the record's limits spec, or '' when unknown or already finished.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return ''
end
local spec = redis.call('HGET', KEYS[1], 'limits')
if not spec then
  return ''
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return spec
