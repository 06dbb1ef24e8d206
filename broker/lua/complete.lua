-- Records a task's final outcome, atomically.
-- KEYS[1] the queue's stream, KEYS[2] the task's result key,
-- KEYS[3] the queue's stats hash.
-- ARGV[1] consumer group, ARGV[2] stream entry id ("" when none),
-- ARGV[3] the record (JSON), ARGV[4] record TTL in ms, ARGV[5] the final
-- state name, ARGV[6] the done channel.
-- Returns 1 when the record was written, 0 when the task already had a
-- final record (at-most-once result: only the ack and a duplicate count).
local final = {SUCCEEDED = true, FAILED = true, EXPIRED = true,
               CANCELED = true, REJECTED = true}
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local current = redis.call('GET', KEYS[2])
if current then
  local ok, rec = pcall(cjson.decode, current)
  if ok and type(rec) == 'table' and final[rec.state] then
    redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
    return 0
  end
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('HINCRBY', KEYS[3], 'processed', 1)
redis.call('HINCRBY', KEYS[3], string.lower(ARGV[5]), 1)
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
