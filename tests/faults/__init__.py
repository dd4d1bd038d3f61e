"""The fault suite: real writer, producer and redis-server processes, real faults (SIGKILL,
SIGSTOP, a Redis restart, a storage outage), and a check that every record acknowledged is in
the table exactly once and every record refused is not."""
