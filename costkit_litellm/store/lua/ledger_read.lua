-- Ledger entries by stream id range, raw (the client's XRANGE parsing would merge fields).
-- KEYS: [stream]. ARGV: low ('-' or ms), high ('+' or ms), count ('' = all).
if ARGV[3] ~= '' then
  return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
end
return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])
