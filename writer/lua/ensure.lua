-- KEYS: stream, config, epoch. Create the group ARGV[1] (and the stream) unless it exists, and
-- name the stream's epoch ARGV[2] unless it has one (lost with the stream, or never named:
-- producers name one too, the first to send into a new stream; a value that is not 32 hex digits
-- is not one, whoever wrote it). Drops the fields earlier releases kept in the config hash.
-- Returns whether the group was created, and the epoch. A script, so that it runs at maxmemory: a
-- full stream is what the writer must drain.
--#include touch.lua
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
local created = 1
if type(made) == 'table' and made.err then
  if not string.find(made.err, 'BUSYGROUP') then
    return redis.error_reply(made.err)
  end
  created = 0
end
local function valid(epoch)
  return epoch and #epoch == 32 and string.match(epoch, '^%x+$') ~= nil
end
local epoch = redis.call('GET', KEYS[3])
if not valid(epoch) then
  -- Earlier releases kept it in the config hash; anything else is not an epoch of ours.
  epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not valid(epoch) then epoch = ARGV[2] end
  redis.call('SET', KEYS[3], epoch)
end
redis.call('HDEL', KEYS[2], 'epoch', 'queued')
return {created, epoch}
