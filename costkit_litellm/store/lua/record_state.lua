-- Cluster mode, before reserving: claim the call id by writing its reservation record.
-- KEYS: [record, done]. ARGV: now_ms|'', amount, lease_ms, record_ttl_ms, limits_spec.
-- Returns 1 (claimed: the caller holds the limits next) or 3 (the id is already known).
local now = now_ms(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  return 3
end
redis.call('HSET', KEYS[1], 'amount', ARGV[2], 'lease_until', int(now + tonumber(ARGV[3])),
  'limits', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
