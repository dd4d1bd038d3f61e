-- Push entries onto the inbox, in order, while the stream and the inbox hold fewer than
-- ``max_queue_size`` records.
--
-- KEYS: inbox, config, queued (records in the stream: the writer's count), inboxed (records in
-- the inbox). ARGV: default max_queue_size (also used if the config hash holds no positive one),
-- entry width (10 for single-record entries, 12 for packed ones, whose ``n`` is the fifth pair;
-- 2 more for entries of version 5, whose ``nonce`` is the last pair),
-- the pushed channel, then each entry's field/value pairs. Returns the record count of each entry
-- pushed: a prefix of those given, none when the queue is full. An entry is pushed onto an empty
-- queue even if it alone holds more than ``max_queue_size`` records. Each element is the Redis
-- time of the push, the lengths of the fields and the fields (``INBOX_ELEMENT``); the writer moves
-- it into the stream as an entry of those fields plus ``at``, that time. The script decides what
-- fits and counts it before pushing anything, so a failing push adds nothing after the count.
-- ``inboxed`` is taken as at least the inbox's length and at most its length times the writer's
-- ``max_batch`` (the most records an entry packs), so a count that drifted, or that a client
-- made up, heals at once; the writer lowers it as it moves entries. The pushed channel hears of a
-- push only onto an empty inbox: the writer waits only after a read that emptied it.
redis.replicate_commands()
local width = tonumber(ARGV[2])
if width ~= $ENTRY_WIDTH and width ~= $PACKED_ENTRY_WIDTH and width ~= $NONCED_PACKED_WIDTH then
  return redis.error_reply('ERR entry width must be $ENTRY_WIDTH, $PACKED_ENTRY_WIDTH or $NONCED_PACKED_WIDTH')
end
local limit = tonumber(redis.call('HGET', KEYS[2], '$CONFIG_MAX_QUEUE_SIZE') or '')
if not limit or limit < 1 then limit = tonumber(ARGV[1]) end
local packing = tonumber(redis.call('HGET', KEYS[2], '$CONFIG_MAX_BATCH') or '')
if not packing or packing < 1 then packing = 1 end
local streamed = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if not (streamed >= 0) then streamed = 0 end
local waiting = redis.call('LLEN', KEYS[1])
local stored = redis.call('GET', KEYS[4])
local inboxed = tonumber(stored or '0') or 0
if not (inboxed >= waiting) then inboxed = waiting end
inboxed = math.min(inboxed, waiting * packing)
local queued = streamed + inboxed
local counts = {}
local i = 4
while i + width - 1 <= #ARGV do
  local n = 1
  if width >= $PACKED_ENTRY_WIDTH and ARGV[i + 8] == 'n' and string.match(ARGV[i + 9], '^[1-9]%d?%d?%d?%d?$') then
    n = math.min(tonumber(ARGV[i + 9]), $MAX_PACKED_RECORDS)
  end
  if queued + n > limit and queued > 0 then break end
  queued = queued + n
  inboxed = inboxed + n
  counts[#counts + 1] = n
  i = i + width
end
local count = string.format('%d', inboxed)
if stored ~= count then redis.call('SET', KEYS[4], count) end
if #counts == 0 then return counts end
local now = redis.call('TIME')
local at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
local elements = {}
for e = 1, #counts do
  local first = 4 + (e - 1) * width
  local lengths = {}
  for f = first, first + width - 1 do lengths[#lengths + 1] = #ARGV[f] end
  elements[e] = at .. ':' .. table.concat(lengths, ',') .. ';'
                .. table.concat(ARGV, '', first, first + width - 1)
end
for first = 1, #elements, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(elements, first, math.min(first + 999, #elements)))
end
if waiting == 0 then redis.call('PUBLISH', ARGV[3], #counts) end
return counts
