-- Set one field of a map unless the field is new and the map already holds max fields (a bound a
-- client cannot push: the webhook's dead-letter record). Returns 1 when written, 0 when refused.
-- KEYS: [map]. ARGV: field, value, max.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
