-- Cancels a task that has not finished: writes its final CANCELED record
-- and marks its id canceled, so a worker that takes it later drops it.
-- KEYS[1] the task's result key, KEYS[2] the queue's canceled set (zset:
-- id -> time), KEYS[3] the queue's stats hash.
-- ARGV[1] the CANCELED record, ARGV[2] record TTL in ms, ARGV[3] the done
-- channel, ARGV[4] the task id.
-- Returns {"CANCELED", 1} when canceled now, or {the final state the task
-- already has, 0}.
local state = final_state(KEYS[1])
if state then return {state, 0} end
local now = now_ms()
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[4])
-- A mark older than the record's TTL has done its work.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[3], 'canceled', 1)
redis.call('PUBLISH', ARGV[3], 'CANCELED')
return {'CANCELED', 1}
