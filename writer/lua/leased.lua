-- Prelude of the scripts below: go on only while this writer holds the lease (taking it back if
-- it vanished and is free), so a writer that was replaced cannot take entries any more.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {0, holder}
end
--#include keep_lease.lua
