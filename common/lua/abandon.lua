-- Abandon records a producer sent and the writer has not answered by their deadline.
--
-- KEYS: the producer's ``seen``, ``claim`` and ``abandoned`` keys, and the ``epoch`` key. ARGV: the
-- stream's epoch the records were sent under ('' if none was known), then sequence numbers.
-- Returns those abandoned: no writer had claimed or settled them, and none ever will write them.
-- The others were claimed by a writer (or settled): their true answer is on its way. Returns -1,
-- abandoning nothing, if the stream's epoch changed since (Redis lost its data, claims included):
-- their outcome cannot be known. Only ``SADD``: a producer account may add to an abandoned set but
-- never shorten its life (the writer sets its expiry as it claims, and removes the members it
-- settles), so no other client can undo an abandonment.
local epoch = redis.call('GET', KEYS[4]) or ''
if ARGV[1] ~= '' and epoch ~= ARGV[1] then
  return -1
end
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
local claim = tonumber(redis.call('GET', KEYS[2]) or '-1') or -1
local decided = math.max(seen, claim)
local abandoned = {}
for i = 2, #ARGV do
  if tonumber(ARGV[i]) > decided then
    redis.call('SADD', KEYS[3], ARGV[i])
    abandoned[#abandoned + 1] = ARGV[i]
  end
end
return abandoned
