-- Records a task's final outcome, atomically.
-- KEYS[1] the queue's stream, KEYS[2] the task's result key,
-- KEYS[3] the queue's stats hash, KEYS[4] the dead set (zset: id -> time),
-- KEYS[5] the dead entries (hash: id -> JSON).
-- ARGV[1] consumer group, ARGV[2] stream entry id ("" when none),
-- ARGV[3] the consumer holding the lease, ARGV[4] the record (JSON),
-- ARGV[5] record TTL in ms, ARGV[6] the final state name, ARGV[7] the done
-- channel, ARGV[8] the task id, ARGV[9] the dead entry ("" = not
-- dead-lettered), ARGV[10] most dead entries kept, ARGV[11] longest time
-- a dead entry is kept (ms).
-- Returns 1 when the record was written; 0 when the task already had a
-- final record (at-most-once result: the entry is acked and, unless a
-- canceled task is being dropped, a duplicate is counted); -1 when
-- the lease was lost (nothing is written; `stale` is counted).
if ARGV[2] ~= '' then
  if not holds_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
    redis.call('HINCRBY', KEYS[3], 'stale', 1)
    return -1
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local state = final_state(KEYS[2])
if state then
  -- A worker dropping a canceled task is not a duplicate run.
  if not (state == 'CANCELED' and ARGV[6] == 'CANCELED') then
    redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
  end
  return 0
end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'processed', 1)
redis.call('HINCRBY', KEYS[3], string.lower(ARGV[6]), 1)
if ARGV[9] ~= '' then
  local now = now_ms()
  redis.call('ZADD', KEYS[4], now, ARGV[8])
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[9])
  -- Bounded by age, then by count; the oldest go first.
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[11]),
                         'LIMIT', 0, 1000)
  for _, id in ipairs(old) do
    redis.call('ZREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
  end
  local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[10])
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, over - 1)) do
      redis.call('HDEL', KEYS[5], id)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[4], 0, over - 1)
  end
end
redis.call('PUBLISH', ARGV[7], ARGV[6])
return 1
