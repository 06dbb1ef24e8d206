-- Moves a leased task from the stream into the scheduled set, atomically:
-- for a retry (with its RETRYING record) or to park a task whose eta is
-- still ahead.
-- KEYS[1] the queue's stream, KEYS[2] its scheduled set, KEYS[3] the
-- task's result key, KEYS[4] the queue's stats hash.
-- ARGV[1] consumer group, ARGV[2] stream entry id, ARGV[3] the consumer
-- holding the lease, ARGV[4] the envelope to schedule, ARGV[5] due time in
-- ms, ARGV[6] "retry" or "park", ARGV[7] the RETRYING record (retry only),
-- ARGV[8] record TTL in ms, ARGV[9] the queue's wake channel (schedulers
-- asleep until a later due time look again).
-- Returns 1 when scheduled; 0 when a parked task is already due by the
-- broker's clock (the caller runs it now); -1 when the task already has a
-- final record (a duplicate delivery: acked, counted, nothing scheduled);
-- -2 when the lease was lost (nothing changes; `stale` is counted).
if not holds_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  redis.call('HINCRBY', KEYS[4], 'stale', 1)
  return -2
end
local due = tonumber(ARGV[5])
if ARGV[6] == 'park' and due <= now_ms() then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if final_state(KEYS[3]) then
  redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
  return -1
end
redis.call('ZADD', KEYS[2], due, ARGV[4])
redis.call('PUBLISH', ARGV[9], ARGV[5])
if ARGV[6] == 'retry' then
  redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[8])
  redis.call('HINCRBY', KEYS[4], 'retried', 1)
end
return 1
