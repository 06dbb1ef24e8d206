-- Recovers tasks whose lease expired (their worker died, hung or was cut
-- off): each entry idle longer than the lease goes back to the stream as a
-- new entry with its redelivery count raised, or, past the redelivery
-- limit, stays claimed by the caller, who records it as FAILED.
-- KEYS[1] the queue's stream, KEYS[2] its stats hash.
-- ARGV[1] consumer group, ARGV[2] the caller's consumer name, ARGV[3] the
-- lease in ms (minimum idle time), ARGV[4] most entries per call,
-- ARGV[5] the redelivery limit.
-- Returns {number redelivered, {{entry id, task, redeliveries, attempt or
-- ""}, ...}}: the second list holds the entries past the limit, whose
-- lease the caller now holds.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}} end
local res = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0',
                        'COUNT', ARGV[4])
if type(res) ~= 'table' or res.err then return {0, {}} end
local limit = tonumber(ARGV[5])
local lost = {}
local redelivered = 0
for _, e in ipairs(res[2]) do
  local id, fields = e[1], e[2]
  local task, redeliveries, attempt, promoted = nil, 0, nil, nil
  if type(fields) == 'table' then
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      if name == 'task' and task == nil then task = value
      elseif name == 'redeliveries' then redeliveries = tonumber(value) or 0
      elseif name == 'attempt' then attempt = value
      elseif name == 'promoted' then promoted = value end
    end
  end
  redeliveries = redeliveries + 1
  if task == nil then
    -- Nothing left to deliver (the entry's data is gone).
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  elseif redeliveries > limit then
    table.insert(lost, {id, task, tostring(redeliveries), attempt or ''})
  else
    local add = {'XADD', KEYS[1], '*', 'task', task, 'redeliveries', tostring(redeliveries)}
    if attempt then table.insert(add, 'attempt'); table.insert(add, attempt) end
    if promoted then table.insert(add, 'promoted'); table.insert(add, promoted) end
    redis.call(unpack(add))
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HINCRBY', KEYS[2], 'redelivered', 1)
    redelivered = redelivered + 1
  end
end
return {redelivered, lost}
