-- Append events to the stream at most once each, atomically.
-- KEYS[1] the stream, KEYS[2] a sorted set of recently appended event ids (score: append time in ms)
-- ARGV[1] MAXLEN (approximate), ARGV[2] now in ms, ARGV[3] how long to remember ids (ms),
-- then per event: event_id, number of field/value pairs N, then N pairs.
-- Returns, per event, the stream id it was appended under, or the empty string if it already was.
local stream, seen = KEYS[1], KEYS[2]
local maxlen, now, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - keep)
local result = {}
local i = 4
while i <= #ARGV do
  local event_id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local fields = {}
  for j = 0, 2 * n - 1 do
    fields[#fields + 1] = ARGV[i + 2 + j]
  end
  i = i + 2 + 2 * n
  if redis.call('ZSCORE', seen, event_id) then
    result[#result + 1] = ''
  else
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
    redis.call('ZADD', seen, now, event_id)
    result[#result + 1] = id
  end
end
return result
