-- KEYS: the stream, the lease, then per producer its seen, claim and abandoned keys. ARGV: the
-- lease value, the lease's expiry (ms), the claim's expiry (ms), the jump limit, then per producer
-- the number of its ranges and each range's first and last sequence number, in stream order.
-- Returns Redis time, the lease holder if it is another writer (then nothing was claimed), and per
-- producer its settled sequence number (-1: none), the (1-based) ranges refused as jumping too
-- far ahead, and those of its sequence numbers in the batch it abandoned.
local now = redis.call('TIME')
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {now[1], now[2], holder, {}}
end
--#include keep_lease.lua
local limit = tonumber(ARGV[4])
local out = {}
local a = 5
for k = 3, #KEYS, 3 do
  local seen = tonumber(redis.call('GET', KEYS[k]) or '-1') or -1
  local claimed = tonumber(redis.call('GET', KEYS[k + 1]) or '-1') or -1
  local base = math.max(seen, claimed)
  local top, top_text = claimed, nil
  local refused, claimed_ranges = {}, {}
  local ranges = tonumber(ARGV[a])
  a = a + 1
  for r = 1, ranges do
    local first, last = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if base >= 0 and first > base + limit then
      refused[#refused + 1] = r
    else
      if last > top then
        top, top_text = last, ARGV[a + 1]
      end
      if last > base then base = last end
      claimed_ranges[#claimed_ranges + 1] = {first, last}
    end
    a = a + 2
  end
  if top_text then
    redis.call('SET', KEYS[k + 1], top_text, 'PX', ARGV[3])
  elseif claimed >= 0 then
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[3])
  end
  local abandoned = {}
  if redis.call('EXISTS', KEYS[k + 2]) == 1 then
    -- Only the batch's own sequence numbers are asked about: whatever else a client put in
    -- the set (anything at all, on a producer account) is never read. (Listed only here: most
    -- batches meet no abandoned set.)
    local seqs = {}
    for _, range in ipairs(claimed_ranges) do
      for s = range[1], range[2] do seqs[#seqs + 1] = string.format('%d', s) end
    end
    for first = 1, #seqs, 1000 do
      local last = math.min(first + 999, #seqs)
      local found = redis.call('SMISMEMBER', KEYS[k + 2], unpack(seqs, first, last))
      for i = 1, #found do
        if found[i] == 1 then abandoned[#abandoned + 1] = seqs[first + i - 1] end
      end
    end
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[3])
  end
  out[#out + 1] = {seen, refused, abandoned}
end
return {now[1], now[2], false, out}
