-- Empties parts of a queue. Ready tasks are the stream entries no worker
-- has taken yet (after the group's last delivered id); taken ones keep
-- running and recording. Works in batches so Redis is never held long.
-- KEYS[1] the stream, KEYS[2] the scheduled set, KEYS[3] the dead set,
-- KEYS[4] the dead entries hash.
-- ARGV[1] parts: a string of r (ready), s (scheduled), d (dead);
-- ARGV[2] consumer group; ARGV[3] batch size.
-- Returns {ready removed, scheduled removed, dead removed, 1 when done}.
local batch = tonumber(ARGV[3])
local ready, scheduled, dead, done = 0, 0, 0, 1
if string.find(ARGV[1], 'r', 1, true) and redis.call('EXISTS', KEYS[1]) == 1 then
  local from = '-'
  local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == ARGV[2] then
        for j = 1, #g, 2 do
          if g[j] == 'last-delivered-id' then from = '(' .. g[j + 1] end
        end
      end
    end
  end
  local entries = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', batch)
  for _, e in ipairs(entries) do redis.call('XDEL', KEYS[1], e[1]) end
  ready = #entries
  if ready == batch then done = 0 end
end
if string.find(ARGV[1], 's', 1, true) then
  scheduled = redis.call('ZCARD', KEYS[2])
  redis.call('UNLINK', KEYS[2])
end
if string.find(ARGV[1], 'd', 1, true) then
  dead = redis.call('ZCARD', KEYS[3])
  redis.call('UNLINK', KEYS[3], KEYS[4])
end
return {ready, scheduled, dead, done}
