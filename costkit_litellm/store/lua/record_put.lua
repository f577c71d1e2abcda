-- Cluster mode, after holding every limit: write the reservation record.
-- KEYS: [record]. ARGV: now_ms|'', amount, lease_ms, record_ttl_ms, limits_spec.
local now = now_ms(ARGV[1])
redis.call('HSET', KEYS[1], 'amount', ARGV[2], 'lease_until', int(now + tonumber(ARGV[3])),
  'limits', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
