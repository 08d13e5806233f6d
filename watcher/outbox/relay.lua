-- Append events to their streams at most once each, atomically.
-- KEYS[1] a sorted set of recently appended event ids (score: append time in ms), KEYS[2..] the streams
-- ARGV[1] MAXLEN (approximate, of each stream), ARGV[2] now in ms, ARGV[3] how long to remember ids (ms),
-- then per event: event_id, the index in KEYS of its stream, number of field/value pairs N, then N pairs.
-- Returns, per event, the stream id it was appended under, or the empty string if it already was.
local seen = KEYS[1]
local maxlen, now, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - keep)
local result = {}
local i = 4
while i <= #ARGV do
  local event_id = ARGV[i]
  local stream = KEYS[tonumber(ARGV[i + 1])]
  local n = tonumber(ARGV[i + 2])
  local fields = {}
  for j = 0, 2 * n - 1 do
    fields[#fields + 1] = ARGV[i + 3 + j]
  end
  i = i + 3 + 2 * n
  if redis.call('ZSCORE', seen, event_id) then
    result[#result + 1] = ''
  else
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
    redis.call('ZADD', seen, now, event_id)
    result[#result + 1] = id
  end
end
return result
