-- Move up to a count of entries (and about a byte cap) from the inbox into the stream, in
-- order: each element's fields become a stream entry, plus ``at``, the time of its push. An
-- element that is not one (pushed by hand) becomes an entry with nothing but ``lq:malformed``
-- (its size): acked and never answered, as an entry naming no reply key is. Only the writer adds
-- to the stream, so stream ids are Redis's own clock, never a client's choice. Keeps ``queued``
-- (records in the stream: at least one an entry) and ``inboxed`` (records in the inbox: 0 once it
-- is empty, whatever a client wrote there) counted; a packed entry counts its ``n`` records, read
-- as the writer reads them (canonical decimal, ``recs`` or ``cols`` and no ``rec``).
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
