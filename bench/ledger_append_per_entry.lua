-- Append one ledger entry to a stream, once per entry id, trimming by count and age.
-- KEYS: [stream, marker]. ARGV: now_ms|'', entry_id, dedupe_ttl_ms, max_len|'', max_age_ms|'',
--       then field, value pairs. The entry id is stored as the first field.
-- Returns 1 appended, 0 a repeat.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local now = now_ms(ARGV[1])
local id = '*'
if ARGV[1] ~= '' then
  -- An injected clock: ids must still grow, so never go below the newest entry.
  local ms = now
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    ms = math.max(ms, tonumber(string.match(last[1][1], '^(%d+)')))
  end
  id = int(ms) .. '-*'
end
local args = {'XADD', KEYS[1]}
if ARGV[4] ~= '' then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = ARGV[4]
end
args[#args + 1] = id
args[#args + 1] = 'entry_id'
args[#args + 1] = ARGV[2]
for i = 6, #ARGV do
  args[#args + 1] = ARGV[i]
end
redis.call(unpack(args))
if ARGV[5] ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', int(now - tonumber(ARGV[5])))
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
