-- KEYS: config hash. ARGV: its writer_until_ms field. Until when the writer holds the lease
-- (or false), and Redis time: one script, so one server's clock is compared.
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('TIME')}
