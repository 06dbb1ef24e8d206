-- Moves a taken task from the stream into the scheduled set, atomically:
-- for a retry (with its RETRYING record) or to park a task whose eta is
-- still ahead.
-- KEYS[1] the queue's stream, KEYS[2] its scheduled set, KEYS[3] the
-- task's result key, KEYS[4] the queue's stats hash.
-- ARGV[1] consumer group, ARGV[2] stream entry id, ARGV[3] the envelope to
-- schedule, ARGV[4] due time in ms, ARGV[5] "retry" or "park",
-- ARGV[6] the RETRYING record (retry only), ARGV[7] record TTL in ms.
-- Returns 1 when scheduled, 0 when a parked task is already due by the
-- broker's clock (the caller runs it now), -1 when the task already has a
-- final record (a duplicate delivery: acked, counted, nothing scheduled).
local due = tonumber(ARGV[4])
if ARGV[5] == 'park' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if due <= now then return 0 end
end
local final = {SUCCEEDED = true, FAILED = true, EXPIRED = true,
               CANCELED = true, REJECTED = true}
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local current = redis.call('GET', KEYS[3])
if current then
  local ok, rec = pcall(cjson.decode, current)
  if ok and type(rec) == 'table' and final[rec.state] then
    redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
    return -1
  end
end
redis.call('ZADD', KEYS[2], due, ARGV[3])
if ARGV[5] == 'retry' then
  redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7])
  redis.call('HINCRBY', KEYS[4], 'retried', 1)
end
return 1
