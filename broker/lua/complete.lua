-- Records the final outcomes of one or more tasks of a queue, atomically:
-- one call per batch a worker finished.
-- KEYS[1] the queue's stream, KEYS[2] its stats hash, KEYS[3] its dead set
-- (zset: id -> time), KEYS[4] its dead entries (hash: id -> JSON), KEYS[5]
-- its rate hash (finished tasks per 10-second bucket).
-- ARGV[1] consumer group, ARGV[2] record TTL in ms, ARGV[3] most dead
-- entries kept, ARGV[4] longest time a dead entry is kept (ms), ARGV[5]
-- the result key prefix "<ns>:{q}:result:", ARGV[6] the done channel
-- prefix "<ns>:{q}:done:"
-- (result keys are in the queue's slot), then six arguments per task:
-- stream entry id ("" when none), task id, the record (JSON), the final
-- state name, the dead entry ("" = not dead-lettered), the follow-ups
-- ("" = none; else a JSON array of [stream key, scheduled key, wake
-- channel, queues key, queue, eta ms, envelope]). Follow-ups are published
-- only with a new final record (so at most once per task id), each as an
-- enqueue does: SADD queues, then XADD to the stream, or ZADD to the
-- scheduled set and PUBLISH on the wake channel when its eta is ahead.
-- Their keys may belong to other queues (other hash slots): Celer targets
-- a single Redis, where a script may touch keys it does not declare.
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
for i = 7, #ARGV, 6 do
  local entry, id, record, state, dead, follow = ARGV[i], ARGV[i + 1], ARGV[i + 2],
                                                 ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
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
    -- Written only where no record is (one key lookup, the common case);
    -- a record already there comes back instead, and a non-final one
    -- (RETRYING) is then replaced.
    local previous = redis.call('SET', key, record, 'PX', ttl, 'NX', 'GET')
    local current = final_of(previous)
    if current then
      -- A worker dropping a canceled task is not a duplicate run.
      if not (current == 'CANCELED' and state == 'CANCELED') then count('duplicates') end
      outcome = 0
    else
      if previous then redis.call('SET', key, record, 'PX', ttl) end
      count('processed')
      count(string.lower(state))
      if dead ~= '' then
        now = now or now_ms()
        redis.call('ZADD', KEYS[3], now, id)
        redis.call('HSET', KEYS[4], id, dead)
        dead_added = true
      end
      redis.call('PUBLISH', ARGV[6] .. id, state)
      if follow ~= '' then
        for _, f in ipairs(cjson.decode(follow)) do
          redis.call('SADD', f[4], f[5])
          now = now or now_ms()
          if f[6] > now then
            redis.call('ZADD', f[2], f[6], f[7])
            redis.call('PUBLISH', f[3], f[6])
          else
            redis.call('XADD', f[1], '*', 'task', f[7])
          end
        end
      end
    end
  end
  table.insert(outcomes, outcome)
end
for field, n in pairs(counts) do redis.call('HINCRBY', KEYS[2], field, n) end
-- Recent throughput (read by taskctl queues/stats/top): final records per
-- 10-second bucket of the broker's clock in <ns>:{q}:rate, beside the stats
-- hash (same slot). Field: bucket number (ms / 10000); value: count. When a
-- bucket is created, those older than 8 buckets go, and the key lives 120 s
-- after the last new bucket, so a quiet queue's rate hash disappears.
if counts.processed then
  now = now or now_ms()
  local rate = KEYS[5]
  local bucket = math.floor(now / 10000)
  local field = string.format('%d', bucket)
  if redis.call('HINCRBY', rate, field, counts.processed) == counts.processed then
    for _, f in ipairs(redis.call('HKEYS', rate)) do
      local b = tonumber(f)
      if not b or b < bucket - 8 then redis.call('HDEL', rate, f) end
    end
    redis.call('PEXPIRE', rate, 120000)
  end
end
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
