-- KEYS: lease, config hash. Give the lease up if this writer holds it; producers then see
-- no writer serving the table.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], '$CONFIG_WRITER_UNTIL')
  return redis.call('DEL', KEYS[1])
end
return 0
