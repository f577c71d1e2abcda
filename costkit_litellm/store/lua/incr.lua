-- Add to a counter (hash: v = value, x = end in ms); the ttl is set on creation, and on every
-- increment when extend is '1' (an inactivity timeout).
-- KEYS: [counter]. ARGV: now_ms|'', amount, ttl_ms|'', extend ('1'|'0'|absent).
return incr_counter(KEYS[1], now_ms(ARGV[1]), ARGV[2], ARGV[3], ARGV[4])
