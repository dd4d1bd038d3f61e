-- Read up to a count of entries, one at a time, until those read hold a byte budget: what one
-- read brings the writer is bounded by bytes, whatever the entries hold. A field value over its
-- limit (``rec``, ``del``: ``max_record_bytes``; ``recs``, ``cols``: ``max_batch_bytes``; any
-- other: 4 KiB), a field name over 64 bytes, or more than 32 fields are left in Redis: the entry comes with the
-- rest and ``lq:oversized`` (``entries.OVERSIZED``) saying what was left out, to be refused without
-- the writer ever holding it. The last three ARGV are those limits.
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
local limits = {rec = tonumber(ARGV[#ARGV - 2]), del = tonumber(ARGV[#ARGV - 2]),
                recs = tonumber(ARGV[#ARGV - 1]),
                cols = tonumber(ARGV[#ARGV - 1]), [''] = tonumber(ARGV[#ARGV])}
