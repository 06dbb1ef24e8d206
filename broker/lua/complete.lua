-- Records the final outcomes of one or more tasks of a queue, atomically:
-- one call per batch a worker finished.
-- KEYS[1] the queue's stream, KEYS[2] its stats hash, KEYS[3] its dead set
-- (zset: id -> time), KEYS[4] its dead entries (hash: id -> JSON).
-- ARGV[1] consumer group, ARGV[2] record TTL in ms, ARGV[3] most dead
-- entries kept, ARGV[4] longest time a dead entry is kept (ms), ARGV[5]
-- the result key prefix "<ns>:{q}:result:", ARGV[6] the done channel
-- prefix "<ns>:{q}:done:"
-- (result keys are in the queue's slot), then five arguments per task:
-- stream entry id ("" when none), task id, the record (JSON), the final
-- state name, the dead entry ("" = not dead-lettered).
-- Returns one outcome per task: 1 the record was written; 0 the task
-- already had a final record (at-most-once result: the entry is acked
-- and, unless a canceled task is being dropped, a duplicate is counted);
-- -1 the lease was lost (nothing is written; `stale` is counted).
local group, ttl = ARGV[1], ARGV[2]
local counts = {}
local function count(field) counts[field] = (counts[field] or 0) + 1 end
local outcomes = {}
local dead_added = false
local now = nil
for i = 7, #ARGV, 5 do
  local entry, id, record, state, dead = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                                         ARGV[i + 4]
  local outcome = 1
  -- The fence: XACK answers 0 for an entry no longer pending in the group
  -- (reclaimed, handed back or purged since it was taken), and then this
  -- caller's outcome is refused. One command instead of an XPENDING check:
  -- this is the hot path.
  if entry ~= '' and redis.call('XACK', KEYS[1], group, entry) == 0 then
    count('stale')
    outcome = -1
  else
    if entry ~= '' then redis.call('XDEL', KEYS[1], entry) end
    local key = ARGV[5] .. id
    local current = final_state(key)
    if current then
      -- A worker dropping a canceled task is not a duplicate run.
      if not (current == 'CANCELED' and state == 'CANCELED') then count('duplicates') end
      outcome = 0
    else
      redis.call('SET', key, record, 'PX', ttl)
      count('processed')
      count(string.lower(state))
      if dead ~= '' then
        now = now or now_ms()
        redis.call('ZADD', KEYS[3], now, id)
        redis.call('HSET', KEYS[4], id, dead)
        dead_added = true
      end
      redis.call('PUBLISH', ARGV[6] .. id, state)
    end
  end
  table.insert(outcomes, outcome)
end
for field, n in pairs(counts) do redis.call('HINCRBY', KEYS[2], field, n) end
if dead_added then
  -- Bounded by age, then by count; the oldest go first.
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]),
                         'LIMIT', 0, 1000)
  for _, id in ipairs(old) do
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
      redis.call('HDEL', KEYS[4], id)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
  end
end
return outcomes
