-- KEYS: stream, lease, status hash, config hash. Extend the lease (retake it if it vanished
-- and is free) and publish the writer's settings again, with until when it holds the lease.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return 0
end
--#include keep_lease.lua
redis.call('HSET', KEYS[3], 'heartbeat_at_ms', ARGV[3])
if #ARGV >= 5 then redis.call('HSET', KEYS[4], unpack(ARGV, 4)) end
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ARGV[2]
redis.call('HSET', KEYS[4], '$CONFIG_WRITER_UNTIL', string.format('%d', until_ms))
if holder then
  return 1
end
return 2
