-- KEYS: stream, lease, fence. A token above ARGV[3], keeping the lease.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
--#include touch.lua
local token = redis.call('INCR', KEYS[3])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[3], token)
end
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. token, 'KEEPTTL')
return token
