-- Moves dead-lettered tasks back to ready: each goes into the stream again
-- with its attempts reset, and its final record is removed so the new run
-- can record its own outcome.
-- KEYS[1] the dead set, KEYS[2] the dead entries hash, KEYS[3] the stream.
-- ARGV[1] a task id, or "" for a batch of the oldest; ARGV[2] batch size;
-- ARGV[3] how many of the oldest to pass over (entries that cannot be
-- retried); ARGV[4] the result key prefix "<ns>:{q}:result:" (the record
-- keys are in the queue's slot); ARGV[5] only entries dead at or before
-- this time (ms; "" = now): a task that fails again while a "retry all"
-- is under way is not moved a second time.
-- Returns {moved, passed over (no envelope kept), left in the dead set,
-- the cutoff time used}.
local cutoff = ARGV[5] ~= '' and tonumber(ARGV[5]) or now_ms()
local ids
if ARGV[1] ~= '' then
  ids = {ARGV[1]}
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', tonumber(ARGV[3]),
                   tonumber(ARGV[2]))
end
local moved, skipped = 0, 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  local ok, entry = false, nil
  if raw then ok, entry = pcall(cjson.decode, raw) end
  if ok and type(entry) == 'table' and type(entry.envelope) == 'string' then
    redis.call('XADD', KEYS[3], '*', 'task', entry.envelope, 'attempt', '0')
    redis.call('DEL', ARGV[4] .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    moved = moved + 1
  elseif raw then
    skipped = skipped + 1
  end
end
return {moved, skipped, redis.call('ZCOUNT', KEYS[1], '-inf', cutoff), cutoff}
