-- Hands back entries a consumer holds, at once: each goes back into the
-- stream as a new entry (same fields), immediately runnable by any
-- worker, and leaves the consumer's pending list. Used when a worker
-- process stops without finishing what it took.
-- KEYS[1] the queue's stream.
-- ARGV[1] consumer group, ARGV[2] the consumer, ARGV[3] most entries per
-- call, ARGV[4...] the entry ids to hand back (none: every entry the
-- consumer holds).
-- Returns the number of entries handed back.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do
    if holds_lease(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then table.insert(ids, ARGV[i]) end
  end
else
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]),
                              ARGV[2])
  if type(pending) ~= 'table' or pending.err then return 0 end
  for _, p in ipairs(pending) do table.insert(ids, p[1]) end
end
local n = 0
for _, id in ipairs(ids) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] and type(e[1][2]) == 'table' then
    local add = {'XADD', KEYS[1], '*'}
    for _, v in ipairs(e[1][2]) do table.insert(add, v) end
    redis.call(unpack(add))
    n = n + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
return n
