-- Moves due tasks from a queue's scheduled set into its stream.
-- KEYS[1] the scheduled set (member: envelope, score: due time in ms),
-- KEYS[2] the stream.
-- ARGV[1] the most members to move in one call.
-- Due is judged by the broker's clock (TIME), so a worker with a skewed
-- clock never starts a task early.
-- Entries carry promoted=1: they are due by the broker's clock, so the
-- worker runs them without judging their eta by its own clock again.
-- Returns {moved, next due time in ms or -1, broker time in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'task', member, 'promoted', '1')
  redis.call('ZREM', KEYS[1], member)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local nextdue = -1
if head[2] then nextdue = tonumber(head[2]) end
return {#due, nextdue, now}
