"""The one error hierarchy of lancequeue.

Every error a producer can see derives from :class:`LancequeueError`. ``retriable`` says whether
sending the same record again may succeed without changing it.
"""

from __future__ import annotations


class LancequeueError(Exception):
    """Root of every lancequeue error."""

    retriable: bool = False


class ConfigError(LancequeueError, ValueError):
    """A setting, URL or table name is invalid; raised at construction, before any I/O."""


class RecordRejected(LancequeueError, ValueError):
    """This record cannot go into this table (bad type, missing field, wrong vector length, ...).

    Its batch-mates are unaffected. The message names the field at fault.
    """


class WriteFailed(LancequeueError):
    """The table append of the record's batch raised; nothing of that batch was written.

    ``error_type`` and ``error_message`` are what the writer's append raised.
    """

    retriable = True

    def __init__(self, error_type: str, error_message: str) -> None:
        super().__init__(f"{error_type}: {error_message}")
        self.error_type = error_type
        self.error_message = error_message


class QueueFull(LancequeueError):
    """The table's stream held ``max_queue_size`` records for longer than the enqueue timeout."""

    retriable = True


class WriteTimeout(LancequeueError, TimeoutError):
    """The record was not written by its deadline, and never will be: it was never sent, the
    writer found its deadline passed before building a batch with it, or the producer abandoned
    it in Redis before any writer claimed it. Sending it again is safe."""

    retriable = True


class OutcomeUnknown(LancequeueError, TimeoutError):
    """The record's deadline (plus ``answer_grace_ms``) passed while Redis could not be reached
    to settle it: it may be in the table or not. It cannot be retried blindly without risking a
    second copy; check the table, or give records an id and write them idempotently."""


class RedisUnavailable(LancequeueError, ConnectionError):
    """Redis refused the enqueue (read-only replica, out of memory, no permission, bad
    credentials): nothing was added. A lost connection is retried until the record's deadline
    instead, and ends in ``WriteTimeout`` if Redis stays unreachable. Also raised when a
    producer is made with no Redis URL while no embedded server runs for its data
    directory: a producer never starts one."""

    retriable = True


class WriterReplaced(LancequeueError):
    """Another writer took the table over while this one stalled; it stopped without flushing
    (the entries it held stay pending, for the new writer)."""


class ProducerClosed(LancequeueError, RuntimeError):
    """The producer is closed: no more records can be enqueued through it."""
