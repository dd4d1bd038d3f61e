-- Read this consumer's pending entries after an id (a count, then a byte budget).
--#include touch.lua
--#include bounded_read.lua
return bounded_read(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
                    limits)
