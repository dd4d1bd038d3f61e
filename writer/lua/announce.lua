-- Publish the writer's settings (KEYS[3], the config hash) and a fresh status hash (KEYS[4])
-- while this writer holds the lease (KEYS[2]; KEYS[1] is the stream, for the cluster's
-- routing).
--#include leased.lua
redis.call('HSET', KEYS[3], unpack(ARGV, 3, 10))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 11))
