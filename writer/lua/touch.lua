-- Set and clear an expiry on the stream (KEYS[1]): writes Redis allows at maxmemory that change
-- nothing (the stream never has an expiry).
--
-- Redis at maxmemory (noeviction) refuses a script whose first write is one that may grow memory
-- (SET, INCR, HSET, RPUSH...), but lets one run to its end once it has written anything else.
-- Each of the writer's scripts that must work at the cap (to take and keep the lease, claim, and
-- ack and delete what it committed, which is what frees the memory) starts with this.
redis.call('PEXPIRE', KEYS[1], 9999999999999)
redis.call('PERSIST', KEYS[1])
