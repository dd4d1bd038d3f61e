"""The fault suite: real writer, producer and redis-server processes, real faults (SIGKILL,
SIGSTOP, Redis restarts, stalls, data loss and maxmemory, a failing disk, forged entries), and a
check that every record acknowledged is in the table exactly once with its own content, every
record refused is not, and every future resolved in time."""
