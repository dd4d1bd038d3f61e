"""What the writer's Lua scripts share.

Redis at ``maxmemory`` (``noeviction``) refuses a script whose first write is one that may grow
memory (``SET``, ``INCR``, ``HSET``, ``RPUSH``...), but lets one run to its end once it has
written anything else. Each of the writer's scripts that must work at the cap (to take and keep
the lease, claim, and ack and delete what it committed, which is what frees the memory) starts
with ``TOUCH``, given the table's stream as ``KEYS[1]``.
"""

TOUCH = """
redis.call('PEXPIRE', KEYS[1], 9999999999999)
redis.call('PERSIST', KEYS[1])
"""
"""Set and clear an expiry on the stream: writes Redis allows at ``maxmemory`` that change
nothing (the stream never has an expiry)."""

KEEP_LEASE = (
    TOUCH
    + """
if holder then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
"""
)
"""With ``holder`` read from the lease (``KEYS[2]``) and found to be this writer's (``ARGV[1]``)
or free: extend it by ``ARGV[2]`` ms, or take it back (Redis restarted without it, or this
writer stalled past its expiry and nobody took it)."""
