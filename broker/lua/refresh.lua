-- Renews the leases a consumer still holds: resets the idle time of each
-- given entry that is pending for it. An entry it no longer holds is left
-- alone, so a worker that lost a lease never takes the task back.
-- KEYS[1] the queue's stream.
-- ARGV[1] consumer group, ARGV[2] the consumer, ARGV[3...] entry ids.
-- Returns the number of leases renewed.
local renewed = 0
for i = 3, #ARGV do
  if holds_lease(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
