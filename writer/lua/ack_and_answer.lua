-- KEYS: stream, queued counter, status hash, dead-letter stream, inbox, inboxed counter, then per
-- producer its seen key, reply key and abandoned key. ARGV: group, reply expiry (ms), flushed
-- channel, the most records the queue may hold for it to be told of (half of ``max_queue_size``),
-- ``max_batch`` (the most records an inbox entry holds); the number of
-- entries, then each entry's id and record count; the number of dead letters, then each one's
-- field count, MAXLEN and fields; per producer its settled sequence number ('' for none), its
-- reply message ('' for none), the number of its abandoned sequence numbers the batch settled and
-- those; the number of status increments, then field/increment pairs; then status fields to set.
-- Returns the reply keys that could not be written to, with Redis's error. It publishes on the
-- flushed channel only if the stream and the inbox then hold at most half of ``max_queue_size``
-- records (the inbox's count taken as at most its length times ``max_batch``).
local group, ttl, channel = ARGV[1], ARGV[2], ARGV[3]
local reopen, packing = tonumber(ARGV[4]), tonumber(ARGV[5])
local a = 6
local count = tonumber(ARGV[a])
a = a + 1
local ids, records = {}, {}
for i = 1, count do
  ids[i], records[i] = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
end
-- Writes Redis allows at maxmemory come first (after one of them, the others may follow).
redis.call('PEXPIRE', KEYS[1], 9999999999999)
redis.call('PERSIST', KEYS[1])
local removed, acked = 0, 0
for first = 1, count, 1000 do
  local last = math.min(first + 999, count)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ids, first, last))
  for i = first, last do
    removed = removed + redis.call('XDEL', KEYS[1], ids[i]) * records[i]
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 0)
elseif removed > 0 then
  local left = (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) - removed
  redis.call('SET', KEYS[2], math.max(left, 0))
end
-- Acked before (this call repeated after a lost reply): its dead letters and counts are in.
local again = count > 0 and acked == 0
local dead = tonumber(ARGV[a])
a = a + 1
for d = 1, dead do
  local width = tonumber(ARGV[a])
  if not again then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[a + 1], '*', unpack(ARGV, a + 2, a + 1 + width))
  end
  a = a + 2 + width
end
local failures = {}
for k = 7, #KEYS, 3 do
  local seen, message, dropped = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  -- The abandoned sequence numbers this batch settled: forgotten (the rest of the set expires).
  for first = a + 3, a + 2 + dropped, 1000 do
    redis.call('SREM', KEYS[k + 2], unpack(ARGV, first, math.min(first + 999, a + 2 + dropped)))
  end
  a = a + 3 + dropped
  if seen ~= '' then
    local settled = tonumber(seen)
    local current = tonumber(redis.call('GET', KEYS[k]) or '-1') or -1
    if settled > current then
      redis.call('SET', KEYS[k], seen, 'PX', ttl)
    else
      redis.call('PEXPIRE', KEYS[k], ttl)
      settled = current
    end
  end
  if message ~= '' then
    -- pcall: a reply key someone made another type must not lose the other answers.
    local pushed = redis.pcall('RPUSH', KEYS[k + 1], message)
    if type(pushed) == 'table' and pushed.err then
      failures[#failures + 1] = KEYS[k + 1] .. ': ' .. pushed.err
    else
      redis.call('PEXPIRE', KEYS[k + 1], ttl)
    end
  end
end
local increments = tonumber(ARGV[a])
a = a + 1
for i = 1, increments do
  if not again then redis.call('HINCRBY', KEYS[3], ARGV[a], ARGV[a + 1]) end
  a = a + 2
end
redis.call('HSET', KEYS[3], unpack(ARGV, a))
-- Producers waiting for room are woken once the queue is at most half full, not by every
-- flush: each then sends a large call, and calls the queue refuses stay few.
local queued = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local inboxed = tonumber(redis.call('GET', KEYS[6]) or '0') or 0
inboxed = math.min(inboxed, redis.call('LLEN', KEYS[5]) * packing)
if queued + inboxed <= reopen then redis.call('PUBLISH', channel, count) end
return failures
