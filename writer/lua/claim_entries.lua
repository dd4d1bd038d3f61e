-- XAUTOCLAIM with JUSTID, if this writer holds the lease: claiming does not count as a delivery
-- (reading the entry afterwards does), so an entry's delivery count is how many writers read it.
-- In a script also because redis-py drops the cursor of a JUSTID reply.
--#include leased.lua
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 'COUNT', ARGV[7],
                     'JUSTID')
return {1, r[1], r[2]}
