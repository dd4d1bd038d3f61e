"""A chunk of records on its way into the stream: its time to live, sending
again after a lost connection, and what records fail with when they cannot be sent in time.

The sender drives one :class:`Sending` at a time: one send in flight per producer, and sequence
numbers given at send time, so a producer's entries appear in the stream in sequence order (the
writer's de-duplication relies on it).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Generic

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    InvalidResponse,
    RedisError,
    ResponseError,
)

from lancequeue.common.columns import EMPTY
from lancequeue.common.errors import (
    LancequeueError,
    ProducerClosed,
    QueueFull,
    RedisUnavailable,
    WriteTimeout,
)
from lancequeue.common.redis_client import UNREACHABLE
from lancequeue.common.redis_tls import tls_problem
from lancequeue.producer.outbox import Outbox
from lancequeue.producer.outgoing import F, Fail, Outgoing

logger = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.05
"""First pause before reconnecting to Redis; pauses double from there."""
RECONNECT_MAX_S = 1.0
"""Longest pause between reconnection attempts."""
_LEAST_WINDOW = 16
"""Fewest records a call carries after the queue was found full (see ``Sending._window``)."""


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


LEAST_CALL_WAIT_S = 0.1
"""The least time a Redis call is given to answer, however near the records' deadline: a
healthy Redis answers in milliseconds, so one that does not by then is taken as unreachable."""


class Sending(Generic[F]):
    """One chunk of buffered records on its way into the stream; each keeps its deadline."""

    def __init__(
        self,
        outbox: Outbox[F],
        records: list[Outgoing[F]],
        fail: Fail[F],
        before: Sending[F] | None = None,
    ) -> None:
        self._outbox = outbox
        self._unsent = records
        self._earliest = min((item.deadline for item in records), default=math.inf)
        """The earliest deadline among ``_unsent`` (kept as it shrinks: it never falls)."""
        self._timeout_s = records[0].timeout_s if records else 0.0
        self._fail = fail
        self._numbered = False
        self._entry_sizes: list[int] = []
        self._window = len(records)
        """Most records the next call carries: after a full queue took only part of a call,
        about what it took (so a crowded queue is not sent the same records again and again),
        doubling with each call it takes whole; all of them after the writer's message that
        the queue has room (``room_opened``)."""
        self._in_call: list[Outgoing[F]] = []
        self.failed: list[F] = []
        """Futures failed here, before any answer from the writer."""
        self.queue_full: bool = False if before is None else before.queue_full
        """The last try found the queue full (at first: the send before found it so)."""
        self.redis_error: BaseException | None = None if before is None else before.redis_error
        """What the last try to reach Redis failed with, if it did (at first: the send
        before's)."""

    @property
    def done(self) -> bool:
        """Every record is in the stream, failed, or left to the writer's answer."""
        return not self._unsent

    @property
    def unnumbered(self) -> int:
        """Records taken from the buffer and not yet numbered (so not in the outbox yet)."""
        return 0 if self._numbered else len(self._unsent)

    def remaining_s(self) -> float:
        """Time left until the earliest deadline among the unsent records."""
        if not self._unsent:
            return 0.0
        return max(0.0, self._earliest - time.monotonic())

    def call_timeout_s(self) -> float:
        """How long a Redis call made now may take: until the earliest deadline, but at least
        ``LEAST_CALL_WAIT_S``, so that a call started just before it (a full queue's recheck)
        gets its answer instead of being taken for a hung Redis."""
        return max(self.remaining_s(), LEAST_CALL_WAIT_S)

    def enqueue_timeout_s(self, late_s: float) -> float:
        """How long the enqueue script may take: until ``late_s`` past the earliest deadline
        (at least ``LEAST_CALL_WAIT_S``). Its records are numbered, so a late answer still says
        what became of them (a full queue: ``QueueFull`` at once); without one they are settled
        by abandoning, at their deadline plus the answer grace, which ``late_s`` stays under."""
        return max(self.remaining_s() + late_s, LEAST_CALL_WAIT_S)

    def expired(self) -> bool:
        return self._earliest <= time.monotonic()

    def _keep(self, unsent: list[Outgoing[F]]) -> None:
        """What is left to send is ``unsent``."""
        self._unsent = unsent
        self._earliest = min((item.deadline for item in unsent), default=math.inf)

    def give_up_expired(self) -> None:
        """Fail the records whose deadline has passed (``QueueFull`` or ``WriteTimeout``, by
        what held them up); the others go on."""
        now = time.monotonic()
        expired = [item for item in self._unsent if item.deadline <= now]
        self._keep([item for item in self._unsent if item.deadline > now])
        self._give_up(expired, self.not_sent_in_time())

    def next_args(self) -> list[bytes | str | int] | None:
        """Script arguments for the unsent records, numbered now if not yet (under the epoch
        just read); each entry's ttl is the time left until its records' earliest deadline.
        None if a deadline has passed."""
        if self.expired():
            return None
        if not self._numbered:
            self._outbox.number(self._unsent)
            self._numbered = True
        self._in_call = self._unsent[: self._window]
        self._entry_sizes = self._outbox.entries.pack(self._in_call)
        return self._outbox.entries.script_args(self._in_call, self._entry_sizes, time.monotonic())

    def added(self, entries: int) -> bool:
        """The script added the first ``entries`` entries; True if it added all of them,
        False if the queue is full."""
        count = sum(self._entry_sizes[:entries])
        for item in self._unsent[:count]:
            item.record = EMPTY  # in the stream now: never sent again, so not kept
        self._outbox.confirm(self._unsent[:count])
        self._keep(self._unsent[count:])
        self.queue_full = count < len(self._in_call)
        self.redis_error = None
        if self.queue_full:
            self._window = max(_LEAST_WINDOW, count)
        else:
            self._window = max(self._window * 2, _LEAST_WINDOW)
        return not self.queue_full

    def room_opened(self) -> None:
        """The writer said the queue has room again (at least half of it is free): the next
        call carries every unsent record."""
        self._window = max(len(self._unsent), _LEAST_WINDOW)

    def unconfirmed(self, exc: BaseException) -> None:
        """The script call failed without an answer: the records may be in the stream (the
        script is atomic: all of them, up to the room there was, or none). They are sent again
        with the same sequence numbers; the writer drops the copies it has settled already."""
        for item in self._in_call:
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

    def not_sent_in_time(self, timeout_s: float | None = None) -> LancequeueError:
        """What records not sent by their deadline fail with, by what this send met:
        ``QueueFull`` if the queue was full, else ``WriteTimeout``. ``timeout_s`` is theirs,
        if they are not this send's (records that waited for room in the buffer behind it)."""
        waited_s = self._timeout_s if timeout_s is None else timeout_s
        if self.queue_full:
            return QueueFull(f"table {self._outbox.keys.table!r}: queue full for {waited_s}s")
        why = ""
        if self.redis_error is not None:
            cause = self.redis_error
            why = f" (Redis unreachable: {type(cause).__name__}: {cause})"
        elif timeout_s is not None:
            why = " (waiting for this producer's earlier sends)"
        error = WriteTimeout(
            f"record not sent within its timeout of {waited_s}s{why}; it was not "
            "written and will not be"
        )
        error.__cause__ = self.redis_error
        return error

    def give_up(self, error: LancequeueError) -> None:
        """Stop sending. Records never sent fail with ``error``; records that may be in the
        stream stay in the outbox, for the writer's answer or, lacking one, the expiry at their
        deadline plus the answer grace."""
        unsent = self._unsent
        self._keep([])
        self._give_up(unsent, error)

    def _give_up(self, items: list[Outgoing[F]], error: LancequeueError) -> None:
        never_sent = [item for item in items if not item.maybe_sent]
        self._outbox.forget(item for item in never_sent if item.seq)
        for item in never_sent:
            self._fail(item.future, error)
            self.failed.append(item.future)


def not_sent_in_time(table: str, timeout_s: float, blocker: Sending[F] | None) -> LancequeueError:
    """What records that found no room in the send buffer by their deadline fail with: by what
    the send ahead of them met (``blocker``, the sender's current or last send)."""
    if blocker is not None:
        return blocker.not_sent_in_time(timeout_s)
    return WriteTimeout(
        f"record not sent within its timeout of {timeout_s}s (waiting for this producer's "
        f"earlier sends to {table!r}); it was not written and will not be"
    )
