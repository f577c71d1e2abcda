-- Cluster mode rollback: give back call_id's lease on one limit.
-- KEYS: [S, L, A]. ARGV: now_ms|'', call_id.
local now = now_ms(ARGV[1])
refresh(KEYS[1], KEYS[2], KEYS[3], now)
unhold(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return 1
