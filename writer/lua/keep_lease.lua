-- With ``holder`` read from the lease (``KEYS[2]``) and found to be this writer's (``ARGV[1]``)
-- or free: extend it by ``ARGV[2]`` ms, or take it back (Redis restarted without it, or this
-- writer stalled past its expiry and nobody took it).
--#include touch.lua
if holder then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
