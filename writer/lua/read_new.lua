-- If this writer holds the lease (else say who does): move entries from the inbox into the
-- stream, then read new ones from the stream (a count, then a byte budget). With nothing new,
-- the writer waits for the pushed channel (a script cannot block).
--#include leased.lua
--#include bounded_read.lua
--#include move.lua
move(KEYS[3], KEYS[1], KEYS[4], KEYS[5], tonumber(ARGV[5]), 4 * tonumber(ARGV[6]))
local got = bounded_read(KEYS[1], ARGV[3], ARGV[4], '>', tonumber(ARGV[5]), tonumber(ARGV[6]),
                         limits)
if #got > 0 then
  return {1, got}
end
return {2}
