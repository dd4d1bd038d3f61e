-- KEYS: stream, lease, fence. Take the lease if free, with the next fencing token.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
--#include touch.lua
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
