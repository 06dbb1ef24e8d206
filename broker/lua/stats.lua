-- Reads the counts of one queue for taskctl (queues, stats, top). Changes
-- nothing; run with EVAL_RO by broker/stats.c, not through scripts.c.
-- KEYS[1] the stream, KEYS[2] the scheduled set, KEYS[3] the dead set,
-- KEYS[4] the stats hash, KEYS[5] the pause flag, KEYS[6] the rate hash
-- (10-second buckets written by complete.lua).
-- ARGV[1] consumer group, ARGV[2] most scheduled members inspected to count
-- retries, ARGV[3] rate window in whole buckets before the current one.
-- Returns {ready, active, scheduled, retrying, 1 when retrying is exact,
-- dead, processed, succeeded, failed, rejected, expired, canceled, retried,
-- 1 when paused, finished within the window, window length in ms}.
-- Every count is O(1) in the queue's size except retrying, which reads at
-- most ARGV[2] members of the scheduled set.
local len = redis.call('XLEN', KEYS[1])
local active = 0
-- No group yet (no worker ever ran) means nothing is active.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(pending) == 'table' and pending.err == nil then active = tonumber(pending[1]) end
local ready = len - active
if ready < 0 then ready = 0 end

-- A retry is a scheduled envelope with attempt > 0. Envelopes without the
-- word "attempt" are passed over without decoding; JWS members (signed
-- tasks) are not decoded and never count.
local scheduled = redis.call('ZCARD', KEYS[2])
local limit = tonumber(ARGV[2])
local upto, exact = scheduled, 1
if upto > limit then upto, exact = limit, 0 end
local retrying = 0
local page = 1000
for start = 0, upto - 1, page do
  local stop = start + page - 1
  if stop > upto - 1 then stop = upto - 1 end
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], start, stop)) do
    if string.find(m, '"attempt"', 1, true) then
      local ok, env = pcall(cjson.decode, m)
      if ok and type(env) == 'table' and type(env.attempt) == 'number' and env.attempt > 0 then
        retrying = retrying + 1
      end
    end
  end
end

local dead = redis.call('ZCARD', KEYS[3])
local fields = {'processed', 'succeeded', 'failed', 'rejected', 'expired', 'canceled', 'retried'}
local stats = redis.call('HMGET', KEYS[4], unpack(fields))
local counts = {}
for i = 1, #fields do counts[i] = tonumber(stats[i]) or 0 end
local paused = redis.call('EXISTS', KEYS[5])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = math.floor(now / 10000)
local first = current - tonumber(ARGV[3])
local recent = 0
local rate = redis.call('HGETALL', KEYS[6])
for i = 1, #rate, 2 do
  local b = tonumber(rate[i])
  if b and b >= first and b <= current then recent = recent + (tonumber(rate[i + 1]) or 0) end
end
local window = now - first * 10000

return {ready, active, scheduled, retrying, exact, dead, counts[1], counts[2], counts[3],
        counts[4], counts[5], counts[6], counts[7], paused, recent, window}
