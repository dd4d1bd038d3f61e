"""The Lua scripts of the writer's side of the stream (``stream_group``): each checks the lease
where it takes entries, and those that must run at ``maxmemory`` start with a write Redis
allows there (``scripting.TOUCH``)."""

from lancequeue.writer.scripting import KEEP_LEASE, TOUCH

LEASED = (
    """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {0, holder}
end
"""
    + KEEP_LEASE
)
"""Prelude of the scripts below: go on only while this writer holds the lease (taking it back if
it vanished and is free), so a writer that was replaced cannot take entries any more."""
ENSURE = (
    TOUCH
    + """
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
local created = 1
if type(made) == 'table' and made.err then
  if not string.find(made.err, 'BUSYGROUP') then
    return redis.error_reply(made.err)
  end
  created = 0
end
local function valid(epoch)
  return epoch and #epoch == 32 and string.match(epoch, '^%x+$') ~= nil
end
local epoch = redis.call('GET', KEYS[3])
if not valid(epoch) then
  -- Earlier releases kept it in the config hash; anything else is not an epoch of ours.
  epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not valid(epoch) then epoch = ARGV[2] end
  redis.call('SET', KEYS[3], epoch)
end
redis.call('HDEL', KEYS[2], 'epoch', 'queued')
return {created, epoch}
"""
)
"""KEYS: stream, config, epoch. Create the group ARGV[1] (and the stream) unless it exists, and
name the stream's epoch ARGV[2] unless it has one (lost with the stream, or never named:
producers name one too, the first to send into a new stream; a value that is not 32 hex digits
is not one, whoever wrote it). Drops the fields earlier releases kept in the config hash.
Returns whether the group was created, and the epoch. A script, so that it runs at maxmemory: a
full stream is what the writer must drain."""
ANNOUNCE = (
    LEASED
    + """
redis.call('HSET', KEYS[3], unpack(ARGV, 3, 10))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 11))
"""
)
"""Publish the writer's settings (KEYS[3], the config hash) and a fresh status hash (KEYS[4])
while this writer holds the lease (KEYS[2]; KEYS[1] is the stream, for the cluster's
routing)."""
BOUNDED_READ = """
local function bounded_read(stream, group, consumer, after, count, budget, limits)
  local entries, kept_bytes, read_bytes = {}, 0, 0
  for _ = 1, count do
    local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS',
                           stream, after)
    if not got or #got[1][2] == 0 then break end
    local entry = got[1][2][1]
    if after ~= '>' then after = entry[1] end
    local fields = entry[2]
    if fields then
      local kept, dropped, size = {}, {}, 0
      if #fields > 64 then
        dropped[1] = (#fields / 2) .. ' fields'
      else
        for j = 1, #fields - 1, 2 do
          local name, value = fields[j], fields[j + 1]
          local limit = limits[name] or limits['']
          read_bytes = read_bytes + #value
          if #name > 64 then
            dropped[#dropped + 1] = 'a field name of ' .. #name .. ' bytes'
          elseif #value > limit then
            dropped[#dropped + 1] = name .. ' ' .. #value
          else
            kept[#kept + 1] = name
            kept[#kept + 1] = value
            size = size + #value
          end
        end
      end
      if #dropped > 0 then
        kept[#kept + 1] = 'lq:oversized'
        kept[#kept + 1] = table.concat(dropped, ', ')
      end
      fields = kept
      kept_bytes = kept_bytes + size
    end
    entries[#entries + 1] = {entry[1], fields}
    if kept_bytes >= budget or read_bytes >= 4 * budget then break end
  end
  return entries
end
local limits = {rec = tonumber(ARGV[#ARGV - 2]), recs = tonumber(ARGV[#ARGV - 1]),
                cols = tonumber(ARGV[#ARGV - 1]), [''] = tonumber(ARGV[#ARGV])}
"""
"""Read up to a count of entries, one at a time, until those read hold a byte budget: what one
read brings the writer is bounded by bytes, whatever the entries hold. A field value over its
limit (``rec``: ``max_record_bytes``; ``recs``, ``cols``: ``max_batch_bytes``; any other: 4 KiB),
a field name over 64 bytes, or more than 32 fields are left in Redis: the entry comes with the
rest and ``lq:oversized`` (``entries.OVERSIZED``) saying what was left out, to be refused without
the writer ever holding it. The last three ARGV are those limits."""
OTHER_FIELD_LIMIT = 4096
MOVE = """
local function move(inbox, stream, queued, inboxed, count, byte_cap)
  local moved, records, bytes = 0, 0, 0
  while moved < count and bytes < byte_cap do
    local element = redis.call('LPOP', inbox)
    if not element then break end
    moved = moved + 1
    bytes = bytes + #element
    local at, lengths = string.match(string.sub(element, 1, 400), '^(%d*):([%d,]+);')
    local fields = nil
    if at then
      fields = {}
      local pos = #at + #lengths + 3
      for length in string.gmatch(lengths, '%d+') do
        if #fields == 64 then fields = nil break end
        fields[#fields + 1] = string.sub(element, pos, pos + tonumber(length) - 1)
        pos = pos + tonumber(length)
      end
      if fields and (#fields == 0 or #fields % 2 == 1 or pos ~= #element + 1) then
        fields = nil
      end
    end
    local n = 1
    if fields then
      local named = {}
      for f = 1, #fields - 1, 2 do named[fields[f]] = fields[f + 1] end
      local count = named['n']
      if (named['recs'] or named['cols']) and not named['rec'] and count
          and string.match(count, '^[1-9]%d?%d?%d?%d?$') then
        n = math.min(tonumber(count), 65536)
      end
      if at ~= '' then
        fields[#fields + 1] = 'at'
        fields[#fields + 1] = at
      end
      redis.call('XADD', stream, '*', unpack(fields))
    else
      redis.call('XADD', stream, '*', 'lq:malformed', #element)
    end
    records = records + n
  end
  local in_stream = tonumber(redis.call('GET', queued) or '0') or 0
  if not (in_stream >= 0) then in_stream = 0 end
  in_stream = math.max(in_stream + records, redis.call('XLEN', stream))
  if moved > 0 or redis.call('GET', queued) ~= string.format('%d', in_stream) then
    redis.call('SET', queued, string.format('%d', in_stream))
  end
  local waiting = redis.call('LLEN', inbox)
  local stored = redis.call('GET', inboxed)
  local left = 0
  if waiting > 0 then
    left = (tonumber(stored or '0') or 0) - records
    if not (left >= waiting) then left = waiting end
  end
  if stored ~= string.format('%d', left) then
    redis.call('SET', inboxed, string.format('%d', left))
  end
end
"""
"""Move up to a count of entries (and about a byte cap) from the inbox into the stream, in
order: each element's fields become a stream entry, plus ``at``, the time of its push. An
element that is not one (pushed by hand) becomes an entry with nothing but ``lq:malformed``
(its size): acked and never answered, as an entry naming no reply key is. Only the writer adds
to the stream, so stream ids are Redis's own clock, never a client's choice. Keeps ``queued``
(records in the stream: at least one an entry) and ``inboxed`` (records in the inbox: 0 once it
is empty, whatever a client wrote there) counted; a packed entry counts its ``n`` records, read
as the writer reads them (canonical decimal, ``recs`` or ``cols`` and no ``rec``)."""
READ_NEW = (
    LEASED
    + BOUNDED_READ
    + MOVE
    + """
move(KEYS[3], KEYS[1], KEYS[4], KEYS[5], tonumber(ARGV[5]), 4 * tonumber(ARGV[6]))
local got = bounded_read(KEYS[1], ARGV[3], ARGV[4], '>', tonumber(ARGV[5]), tonumber(ARGV[6]),
                         limits)
if #got > 0 then
  return {1, got}
end
return {2}
"""
)
"""If this writer holds the lease (else say who does): move entries from the inbox into the
stream, then read new ones from the stream (a count, then a byte budget). With nothing new,
the writer waits for the pushed channel (a script cannot block)."""
READ_PENDING = (
    TOUCH
    + BOUNDED_READ
    + """
return bounded_read(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
                    limits)
"""
)
"""Read this consumer's pending entries after an id (a count, then a byte budget)."""
CLAIM = (
    LEASED
    + """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 'COUNT', ARGV[7],
                     'JUSTID')
return {1, r[1], r[2]}
"""
)
"""XAUTOCLAIM with JUSTID, if this writer holds the lease: claiming does not count as a delivery
(reading the entry afterwards does), so an entry's delivery count is how many writers read it.
In a script also because redis-py drops the cursor of a JUSTID reply."""
