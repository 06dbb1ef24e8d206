-- Helpers shared by every script: this text is prepended to each script
-- when it is loaded, so each script stays one atomic unit.

local FINAL = {SUCCEEDED = true, FAILED = true, EXPIRED = true,
               CANCELED = true, REJECTED = true}

-- The broker's clock in ms: due times never depend on a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The final state of a record's text, or nil when there is no record
-- (false, as Redis gives a missing value) or it is not final.
local function final_of(text)
  if not text then return nil end
  local ok, rec = pcall(cjson.decode, text)
  if ok and type(rec) == 'table' and FINAL[rec.state] then return rec.state end
  return nil
end

-- The final state of the record stored at key, or nil.
local function final_state(key)
  return final_of(redis.call('GET', key))
end

-- True while entry id is pending for consumer: the consumer holds the
-- lease. A reclaimed, purged or re-delivered entry fails this check, so a
-- worker that lost its lease cannot record anything for it (fencing).
local function holds_lease(stream, group, id, consumer)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1, consumer)
  return type(p) == 'table' and p.err == nil and #p == 1
end
