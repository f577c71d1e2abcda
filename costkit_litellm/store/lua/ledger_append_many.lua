-- Append many ledger entries to a stream in one call, each once per entry id, then trim once.
-- KEYS: [stream, marker_1, ..., marker_n] (all under the stream's hash tag: one slot).
-- ARGV: now_ms|'', dedupe_ttl_ms, max_len|'', max_age_ms|'',
--       entries: JSON [[entry_id, field, value, field, value, ...], ...], entry i <-> KEYS[i + 1].
-- The entry id is stored as the first field. A repeat (marker present, or an earlier entry of
-- this batch with the same id) is not appended. Returns one flag per entry: 1 appended, 0 a repeat.
-- Trimming happens once, after the appends, and is exact (MAXLEN n, MINID now - age): the
-- script is atomic, so nobody sees the stream between the appends and the trim.
local entries = cjson.decode(ARGV[5])
if #entries ~= #KEYS - 1 then
  return redis.error_reply('ledger_append_many: ' .. #entries .. ' entries for ' .. (#KEYS - 1) .. ' markers')
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
local flags = {}
local appended = 0
for i = 1, #entries do
  local marker = KEYS[i + 1]
  if redis.call('EXISTS', marker) == 1 then
    flags[i] = 0
  else
    local entry = entries[i]
    -- One XADD per entry: unpack() of a whole batch would pass Lua's C-stack limit.
    local args = {'XADD', KEYS[1], id, 'entry_id', entry[1]}
    for j = 2, #entry do
      args[j + 4] = entry[j]
    end
    redis.call(unpack(args))
    redis.call('SET', marker, '1', 'PX', ARGV[2])
    flags[i] = 1
    appended = appended + 1
  end
end
if appended > 0 then
  if ARGV[3] ~= '' then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[3])
  end
  if ARGV[4] ~= '' then
    redis.call('XTRIM', KEYS[1], 'MINID', int(now - tonumber(ARGV[4])))
  end
end
return flags
