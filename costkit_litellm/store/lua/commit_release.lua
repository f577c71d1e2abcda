-- After a call, in one step: charge an amount once per call id (as commit.lua with its marker),
-- then release the call's reservation at most once (as finish.lua in release mode).
-- KEYS: [record, done, commit marker], then (S, L, A) per limit.
-- ARGV: now_ms|'', call_id, amount ('' = release only), marker_ttl_ms (both markers),
--       limits_spec (the limits the release expects the record to hold), then role ('b' commit
--       and release, 'c' commit only, 'r' release only), window_end_ms, rolling_window_ms,
--       bucket_ms per limit.
-- Returns {committed (1|0), released (1|0)}, or {-1} when the record holds other limits than
-- limits_spec (nothing changed: read the record and call again with its limits as 'r').
local now = now_ms(ARGV[1])
local call_id, amount, ttl = ARGV[2], ARGV[3], ARGV[4]
-- No done marker while the record exists (the scripts that write the marker delete the record,
-- and those that write the record refuse while the marker exists): the record alone decides.
local release = false
local record = redis.call('HMGET', KEYS[1], 'limits', 'amount')
if record[1] then
  if record[1] ~= ARGV[5] then
    return {-1}
  end
  release = true
end
local commit = false
if amount ~= '' then
  -- once per call id: a new marker (SET NX), else one whose end has passed
  if redis.call('SET', KEYS[3], int(now + tonumber(ttl)), 'PX', ttl, 'NX') then
    commit = true
  else
    local until_ms = redis.call('GET', KEYS[3])
    if not (until_ms and tonumber(until_ms) > now) then
      redis.call('SET', KEYS[3], int(now + tonumber(ttl)), 'PX', ttl)
      commit = true
    end
  end
end
if release then
  redis.call('SET', KEYS[2], 'release', 'PX', ttl)
  redis.call('DEL', KEYS[1])
end
for i = 0, (#KEYS - 3) / 3 - 1 do
  local s, l, a = KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i]
  local base = 6 + 4 * i
  local role = ARGV[base]
  local charge, give_back = commit and role ~= 'r', release and role ~= 'c'
  local x_arg = tonumber(ARGV[base + 1])
  local w, bl, x, c, r
  if charge or give_back then
    w, bl, x, c, r = refresh(s, l, a, now, tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]))
  end
  -- The lease holds the record's amount (reserve writes both).
  local held = record[2] and tonumber(record[2])
  if charge and give_back and w == 0 and c ~= nil and held and redis.call('ZREM', l, call_id) == 1 then
    -- A live lease (the usual case): commit and give it back in one write of c and r, the same
    -- values as add_committed then unhold write while they are exact.
    redis.call('HDEL', a, call_id)
    local ended = x_arg > 0 and now >= x_arg
    local add = tonumber(amount)
    if exact_sum(c, add) and exact_sum(r, -held) then
      local fields = {'r', int(r - held)}
      if not ended then
        fields[3], fields[4] = 'c', int(c + add)
      end
      if ended or x == x_arg then
        redis.call('HSET', s, unpack(fields))
      else
        set_window(s, l, a, x_arg, now, x, false, fields)
      end
    else
      add_committed(s, l, a, amount, x_arg, now, w, bl, x)
      redis.call('HINCRBY', s, 'r', int(-held))
    end
  elseif charge or give_back then
    if charge then
      add_committed(s, l, a, amount, x_arg, now, w, bl, x)
    end
    -- A live lease is given back; an expired one (counted as spent) is corrected to 0 where it
    -- was counted, after the commit above, as when commit and release ran one after the other.
    if give_back and not unhold(s, l, a, call_id, held and record[2]) then
      correct_expired(s, a, call_id, 0, now, w, bl)
    end
  end
end
local out = {0, 0}
if commit then
  out[1] = 1
end
if release then
  out[2] = 1
end
return out
