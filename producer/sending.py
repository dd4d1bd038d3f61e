"""One enqueue call's records on their way into the stream: chunks, their time to live, sending
again after a lost connection, and what records fail with when they cannot be sent in time.

A producer drives a :class:`Sending` while it holds its send lock: one send in flight per
producer, and sequence numbers given at send time, so a producer's entries appear in the stream
in sequence order (the writer's de-duplication relies on it). The sync and the asyncio producer
differ only in how they call Redis and wait.
"""

from __future__ import annotations

import logging
import time
from typing import Generic

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    InvalidResponse,
    RedisError,
    ResponseError,
)

from lancequeue.common.errors import (
    LancequeueError,
    ProducerClosed,
    QueueFull,
    RedisUnavailable,
    WriteTimeout,
)
from lancequeue.common.redis_client import UNREACHABLE
from lancequeue.common.redis_tls import tls_problem
from lancequeue.producer.outbox import F, Fail, Outbox, Outgoing

logger = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.05
"""First pause before reconnecting to Redis; pauses double from there."""
RECONNECT_MAX_S = 1.0
"""Longest pause between reconnection attempts."""


def is_connection_loss(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection to Redis failed (so reconnecting and trying again may
    succeed), rather than that Redis refused the command."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False  # bad credentials: trying again cannot help
    if tls_problem(exc) is not None:
        return False  # a certificate Redis or this client refuses: neither does trying again
    return isinstance(exc, (*UNREACHABLE, InvalidResponse))


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis's own error answer (the command ran no further than the error:
    the enqueue script fails before its first push or not at all, so nothing was added), or a
    TLS handshake refused (nothing was sent)."""
    if tls_problem(exc) is not None:
        return True
    if isinstance(exc, UNREACHABLE):
        return False  # CLUSTERDOWN, TRYAGAIN: error answers that say "not yet"
    return isinstance(exc, ResponseError | AuthenticationError | AuthorizationError)


def closed_unsent() -> ProducerClosed:
    """What a record the producer was closed before sending fails with."""
    return ProducerClosed(
        "producer closed before the record was sent; it was not written and will not be"
    )


class Sending(Generic[F]):
    """The records of one enqueue call, sent chunk by chunk; all share one deadline."""

    def __init__(
        self,
        outbox: Outbox[F],
        records: list[Outgoing[F]],
        deadline: float,
        timeout_s: float,
        chunk_records: int,
        chunk_bytes: int,
        fail: Fail[F],
    ) -> None:
        self._outbox = outbox
        self._unsent = records
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._chunk_records = chunk_records
        self._chunk_bytes = chunk_bytes
        self._fail = fail
        self._chunk: list[Outgoing[F]] = []
        self._entry_sizes: list[int] = []
        self.failed: list[F] = []
        """Futures failed here, before any answer from the writer."""
        self.queue_full = False
        """The last try found the queue full."""
        self.redis_error: BaseException | None = None
        """What the last try to reach Redis failed with, if it did."""

    @property
    def done(self) -> bool:
        """Every record is in the stream, failed, or left to the writer's answer."""
        return not self._unsent

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._deadline

    def next_args(self) -> list[bytes | str | int] | None:
        """Script arguments for the next chunk, numbered now if not yet; each entry's ttl is
        the time left until the deadline. None if no time is left."""
        ttl_ms = int((self._deadline - time.monotonic()) * 1000)
        if ttl_ms <= 0:
            return None
        self._chunk = self._unsent[: self._chunk_length()]
        self._outbox.number(self._chunk)
        self._entry_sizes = self._outbox.entries.pack(self._chunk)
        return self._outbox.entries.script_args(self._chunk, self._entry_sizes, ttl_ms)

    def _chunk_length(self) -> int:
        """How many of the unsent records the next chunk takes: at most ``chunk_records``, and
        at most ``chunk_bytes`` of encoded records, but always at least one (a record over
        ``chunk_bytes`` goes alone). It depends on the unsent records alone, so a chunk sent
        again after a lost connection is the same chunk."""
        size = 0
        for count, item in enumerate(self._unsent[: self._chunk_records]):
            size += len(item.data)
            if size > self._chunk_bytes and count > 0:
                return count
        return min(len(self._unsent), self._chunk_records)

    def added(self, entries: int) -> bool:
        """The script added the first ``entries`` entries of the chunk; True if it added all
        of them, False if the queue is full."""
        count = sum(self._entry_sizes[:entries])
        for item in self._unsent[:count]:
            item.data = b""  # in the stream now: never sent again, so not kept
        self._outbox.confirm(self._unsent[:count])
        self._unsent = self._unsent[count:]
        self.queue_full = count < len(self._chunk)
        self.redis_error = None
        return not self.queue_full

    def unconfirmed(self, exc: BaseException) -> None:
        """The script call failed without an answer: the chunk may be in the stream (the
        script is atomic: all of it, up to the room there was, or none). It is sent again with
        the same sequence numbers; the writer drops the copies it has settled already."""
        for item in self._chunk:
            item.maybe_sent = True
        self.unreachable(exc)

    def unreachable(self, exc: BaseException) -> None:
        """Redis could not be reached: nothing was sent this time."""
        logger.log(
            logging.DEBUG if self.redis_error is not None else logging.WARNING,
            "producer of %r: Redis: %s: %s; reconnecting until the records' deadline",
            self._outbox.keys.table,
            type(exc).__name__,
            exc,
        )
        self.redis_error = exc
        self.queue_full = False

    def refused(self, exc: BaseException) -> None:
        """Redis answered the script with an error: nothing of the chunk was added."""
        error = RedisUnavailable(
            f"Redis refused the enqueue ({type(exc).__name__}: {exc}); the record was not "
            "added to the stream and will not be written"
        )
        error.__cause__ = exc
        self.give_up(error)

    def closed(self) -> None:
        self.give_up(closed_unsent())

    def interrupted(self, exc: BaseException) -> None:
        """Sending stopped on ``exc``: an unexpected Redis error, an interrupt, a
        cancellation."""
        kind = RedisUnavailable if isinstance(exc, RedisError) else LancequeueError
        error = kind(
            f"record not sent ({type(exc).__name__}: {exc}); it was not written and will not be"
        )
        error.__cause__ = exc
        self.give_up(error)

    def not_sent_in_time(self, blocker: Sending[F] | None = None) -> LancequeueError:
        """What records not sent by their deadline fail with: ``QueueFull`` if the queue was
        full, else ``WriteTimeout``. ``blocker`` is the send that held the send lock meanwhile,
        if the records never got it."""
        state = blocker or self
        if state.queue_full:
            return QueueFull(
                f"table {self._outbox.keys.table!r}: queue full for {self._timeout_s}s"
            )
        why = ""
        if state.redis_error is not None:
            cause = state.redis_error
            why = f" (Redis unreachable: {type(cause).__name__}: {cause})"
        elif blocker is not None:
            why = " (waiting for this producer's earlier sends)"
        error = WriteTimeout(
            f"record not sent within its timeout of {self._timeout_s}s{why}; it was not "
            "written and will not be"
        )
        error.__cause__ = state.redis_error
        return error

    def give_up(self, error: LancequeueError) -> None:
        """Stop sending. Records never sent fail with ``error``; records that may be in the
        stream stay in the outbox, for the writer's answer or, lacking one, the expiry at their
        deadline plus the answer grace."""
        never_sent = [item for item in self._unsent if not item.maybe_sent]
        self._outbox.forget(item for item in never_sent if item.seq)
        for item in never_sent:
            self._fail(item.future, error)
            self.failed.append(item.future)
        self._unsent = []
