"""What a producer decides, free of I/O: one implementation for the sync and asyncio drivers.

A producer runs three loops: the **sender** sends the buffered records chunk by chunk (waiting
for room while the queue is full, reconnecting while Redis is unreachable, until each record's
deadline), the **listener** applies the writer's answers, and the **abandoner** abandons the
records the writer did not answer in time. Each loop is a generator here: it yields a
:class:`~lancequeue.producer.calls.Call` (a Redis command or a wait) and is sent its result, or
has the call's exception thrown in. A driver only runs the generators (``Producer`` on threads,
``AsyncProducer`` on the event loop) and performs the calls; every decision, retry and error is
made here once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Generic

from redis.exceptions import RedisError

from lancequeue.common.backoff import Backoff
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.redis_client import REDIS_FAILURES
from lancequeue.producer.buffer import SendBuffer
from lancequeue.producer.calls import REPLY_BLOCK_S, Call, NotStarted, Op, Steps
from lancequeue.producer.liveness import no_writer_warning, writer_live
from lancequeue.producer.outbox import ABANDON_ATTEMPT_S, Outbox
from lancequeue.producer.outgoing import F, Outgoing
from lancequeue.producer.results import WriteResult
from lancequeue.producer.sending import (
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    Sending,
    closed_unsent,
    is_connection_loss,
    is_refusal,
    not_sent_in_time,
)
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

_ABANDON_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, NotStarted)


class ProducerCore(Generic[F]):
    """The state of one producer and its three loops. ``resolve_ok`` and ``resolve_error``
    settle a driver's futures (no-ops on a future already settled)."""

    def __init__(
        self,
        settings: ProducerSettings,
        resolve_ok: Callable[[F, WriteResult], None],
        resolve_error: Callable[[F, LancequeueError], None],
    ) -> None:
        self.settings = settings
        self.outbox: Outbox[F] = Outbox(
            settings.table,
            settings.answer_grace_ms / 1000,
            settings.max_record_bytes,
            settings.pack_records,
        )
        self.buffer: SendBuffer[F] = SendBuffer(
            settings.max_buffered_records,
            settings.chunk_records,
            settings.chunk_bytes,
            settings.linger_ms / 1000,
            settings.send_interval_ms / 1000,
        )
        self.keys = self.outbox.keys
        self._late_s = min(settings.redis_timeout_ms, settings.answer_grace_ms / 2) / 1000
        """How long past its records' deadline the enqueue script's answer is waited for: well
        before the abandoner gives them up (at the deadline plus ``answer_grace_ms``), so a late
        answer never meets sequence numbers already abandoned."""
        self.ok = resolve_ok
        self.fail = resolve_error
        self._writer_checked = False  # whether a writer serves the table was looked at
        self.closing = False
        """Set by ``close()``: the sender sends what is buffered, then stops; a send that
        meets a full queue or an unreachable Redis goes on trying until ``close_deadline``,
        then gives up (``ProducerClosed``: not sent, not written)."""
        self.close_deadline = math.inf
        """``time.monotonic()`` by which ``close()`` wants the sender done."""
        self.stopping = False
        """Set by ``close()`` once answers are no longer awaited: the listener and the
        abandoner stop."""
        self._sending: Sending[F] | None = None
        self._last_sending: Sending[F] | None = None
        self.on_due: Callable[[], None] = lambda: None
        """Set by the driver: wakes the abandoner (a record is due before it planned to
        wake)."""
        self._wakes_at = math.inf  # when the abandoner is to wake, if nothing changes
        self.buffer.on_sooner_due = self._sooner_due
        self.outbox.on_sooner_due = self._due_now

    # -- enqueueing ----------------------------------------------------------------------------

    def register(
        self,
        records: Iterable[Mapping[str, Any]],
        make_future: Callable[[], F],
        timeout: float | None,
        delete: bool = False,
    ) -> tuple[list[F], list[Outgoing[F]]]:
        """Encode records with their deadline (now plus ``timeout``, default ``timeout_ms``):
        their futures, and the records to buffer. A record that cannot be encoded or is too
        large has its future failed here with ``RecordRejected``."""
        timeout_s = self.settings.timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        futures, outgoing, rejected = self.outbox.register(
            records, make_future, deadline, timeout_s, delete
        )
        for future, error in rejected:
            self.fail(future, error)
        return futures, outgoing

    def refuse_late(self, items: list[Outgoing[F]]) -> LancequeueError:
        """Fail records that found no room in the buffer by their deadline, or came after
        ``close()``; returns the error."""
        if self.closing:
            error: LancequeueError = closed_unsent()
        else:
            blocker = self._sending or self._last_sending
            error = not_sent_in_time(self.keys.table, items[0].timeout_s, blocker)
        for item in items:
            self.fail(item.future, error)
        return error

    def fail_unsent(self, items: list[Outgoing[F]], cause: BaseException) -> None:
        """Fail records an interrupted enqueue left unbuffered (never sent)."""
        error = LancequeueError(
            f"record not sent ({type(cause).__name__} while waiting for room in the buffer); "
            "it was not written and will not be"
        )
        error.__cause__ = cause
        for item in items:
            self.fail(item.future, error)

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered (buffered ones included)."""
        sending = self._sending
        in_hand = 0 if sending is None else sending.unnumbered
        return len(self.buffer) + in_hand + len(self.outbox)

    # -- the sender ----------------------------------------------------------------------------

    def sender(self) -> Steps:
        """Send the buffered records, one chunk at a time, until closed with nothing left."""
        while True:
            now = time.monotonic()
            late = self.buffer.expired(now)
            if late:
                self.refuse_late(late)
            chunk, wait_s = self.buffer.take(now, linger=not self.closing)
            if not chunk:
                if self.closing and not len(self.buffer):
                    return
                yield Call(Op.WAIT_BUFFERED, (wait_s,))
                continue
            sending = Sending(self.outbox, chunk, self.fail, self._last_sending)
            self._sending = sending
            try:
                yield from self._send(sending)
            except RedisError as exc:  # neither a lost connection nor a refusal
                sending.interrupted(exc)
            except BaseException as exc:  # interrupts, cancellation: nothing unsent may hang
                if self.stopping:  # close() cancelled the send
                    sending.closed()
                else:
                    sending.interrupted(exc)
                raise
            finally:
                self._sending, self._last_sending = None, sending

    def _send(self, sending: Sending[F]) -> Steps:
        """Run the enqueue script until every record of the chunk is in the stream: waiting
        for room while the queue is full, reconnecting and sending again while Redis is
        unreachable, failing each record at its deadline."""
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        subscribed = False
        abandoned = False  # the generator is being closed: no more calls, not even in finally
        try:
            while not sending.done:
                if self.stopping:  # close() is done waiting: nothing more is sent
                    sending.closed()
                    break
                if sending.expired():
                    sending.give_up_expired()
                    continue
                try:
                    yield from self._connect(sending)  # nothing is sent by this
                except Exception as exc:
                    if not is_connection_loss(exc) and not isinstance(exc, NotStarted):
                        sending.refused(exc)
                        break
                    sending.unreachable(exc)
                    yield from self._pause(sending, backoff)
                    continue
                if self.stopping:
                    continue
                args = sending.next_args()
                if args is None:
                    continue  # the deadline passed meanwhile
                try:
                    ids = yield Call(Op.ENQUEUE, (args,), sending.enqueue_timeout_s(self._late_s))
                except NotStarted as exc:
                    sending.unreachable(exc)
                    continue
                except BaseException as exc:
                    if is_refusal(exc):
                        sending.refused(exc)
                        break
                    sending.unconfirmed(exc)
                    if not is_connection_loss(exc):
                        raise
                    yield from self._pause(sending, backoff)
                    continue
                backoff.reset()
                if sending.added(len(ids)):
                    continue
                # The queue is full: wait for the writer's next flush.
                if self._give_up_closing(sending):
                    break
                try:
                    if not subscribed:
                        # Subscribe, then try again at once: a flush between the last try and
                        # the subscription would otherwise be missed.
                        subscribed = True
                        yield Call(Op.SUBSCRIBE, (), sending.call_timeout_s())
                        continue
                    # The cap bounds a missed message and how long close() waits.
                    wait_s = min(
                        sending.remaining_s(),
                        self.settings.room_recheck_ms / 1000,
                        max(0.0, self.close_deadline - time.monotonic()),
                    )
                    if (yield Call(Op.AWAIT_FLUSH, (wait_s,))):
                        sending.room_opened()
                except Exception as exc:
                    if not is_connection_loss(exc) and not isinstance(exc, NotStarted):
                        raise
                    subscribed = False
                    yield Call(Op.UNSUBSCRIBE)
                    sending.unreachable(exc)
                    yield from self._pause(sending, backoff)
        except GeneratorExit:
            abandoned = True
            raise
        finally:
            if subscribed and not abandoned:
                yield Call(Op.UNSUBSCRIBE)

    def _connect(self, sending: Sending[F]) -> Steps:
        """Have the connection connected, and the config read if it is due (the writer's
        ``max_batch`` and the stream's epoch; naming an epoch if the stream has none)."""
        yield Call(Op.CONNECT, (), sending.call_timeout_s())
        entries = self.outbox.entries
        if entries.config_stale(time.monotonic()):
            values = yield from self._read_config(sending)
            if entries.learn_config(values, 0.0):
                yield Call(Op.SET_EPOCH, (entries.new_epoch(),), sending.call_timeout_s())
                values = yield from self._read_config(sending)
            entries.learn_config(values, time.monotonic())
        if not self._writer_checked:
            until, now = yield Call(Op.READ_WRITER, (), sending.call_timeout_s())
            self._writer_checked = True
            if not writer_live(until, now):
                logger.warning("%s", no_writer_warning(self.keys.table))

    def _read_config(self, sending: Sending[F]) -> Generator[Call, Any, list[Any]]:
        published = yield Call(Op.READ_CONFIG, (), sending.call_timeout_s())
        epoch = yield Call(Op.READ_EPOCH, (), sending.call_timeout_s())
        return [*published, epoch]

    def _pause(self, sending: Sending[F], backoff: Backoff) -> Steps:
        """Wait before reconnecting (bounded by the deadline; close() ends the send)."""
        if self._give_up_closing(sending):
            return
        close_left_s = max(0.0, self.close_deadline - time.monotonic())
        yield Call(Op.PAUSE, (min(backoff.next_delay(), sending.remaining_s(), close_left_s),))

    def _give_up_closing(self, sending: Sending[F]) -> bool:
        """Past ``close()``'s deadline, records that cannot be sent at once fail unsent."""
        if self.closing and time.monotonic() >= self.close_deadline:
            sending.closed()
            return True
        return False

    # -- the listener --------------------------------------------------------------------------

    def listener(self) -> Steps:
        """Move each message of this producer's reply list to its in-flight list, resolve the
        futures it answers, then drop it from there. Keeps going through lost connections and
        Redis restarts until stopped: after one, it first settles what the in-flight list
        holds (a message Redis moved whose reply the lost connection never delivered)."""
        backoff = Backoff(initial_s=0.1, max_s=REPLY_BLOCK_S)
        recover = False
        while not self.stopping:
            try:
                if recover:
                    leftovers = yield Call(Op.READ_INFLIGHT)
                    self.outbox.settle_all(leftovers, self.ok, self.fail)
                    if leftovers:
                        yield Call(Op.TRIM_INFLIGHT, (len(leftovers),))
                    recover = False
                message = yield Call(Op.NEXT_REPLY)
                backoff.reset()
                if message is not None:
                    self.outbox.settle(message, self.ok, self.fail)
                    if not self.stopping:  # else close() deletes the list
                        yield Call(Op.DROP_REPLY, (message,))
                elif len(self.outbox):
                    # A connection lost while blocked may have had a message moved for it.
                    recover = True
            except Exception as exc:  # Redis errors above all; nothing may end the listener
                recover = True
                delay = backoff.next_delay()
                logger.warning(
                    "reply listener: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                )
                yield Call(Op.LISTEN_PAUSE, (delay,))

    def settle_leftovers(self, messages: list[bytes]) -> None:
        """Settle what the in-flight list held at close (the listener has stopped)."""
        self.outbox.settle_all(messages, self.ok, self.fail)

    # -- the abandoner -------------------------------------------------------------------------

    def abandoner(self) -> Steps:
        """Fail each buffered record the sender has not taken by its deadline, and abandon each
        record the writer has not answered by its deadline plus the answer grace, in Redis,
        atomically against the writer's claim: one abandoned fails with ``WriteTimeout``
        (never written), one claimed waits for its answer. It runs apart from
        the listener, whose reads may block on a hung Redis, and tries in short calls, so a
        record's future resolves within ``ABANDON_WITHIN_S`` of its deadline plus the grace
        (``OutcomeUnknown`` if Redis could not be asked by then)."""
        outbox = self.outbox
        while not self.stopping:
            self._wakes_at = math.inf  # awake: any record buffered from now on wakes it again
            now = time.monotonic()
            late = self.buffer.expired(now)
            if late:  # buffered records the sender did not take by their deadline
                self.refuse_late(late)
            due, wait_s = outbox.to_abandon(now)
            if not due:
                buffered_s = self.buffer.due_in(now)
                if buffered_s is not None:
                    wait_s = buffered_s if wait_s is None else min(wait_s, buffered_s)
                self._wakes_at = math.inf if wait_s is None else now + wait_s
                yield Call(Op.WAIT_DUE, (wait_s,))
                continue
            for seqs, args in outbox.abandon_calls(due):
                try:
                    gone = yield Call(Op.ABANDON, (args,), ABANDON_ATTEMPT_S)
                except _ABANDON_FAILURES as exc:
                    outbox.unreachable(seqs, exc, time.monotonic(), self.fail)
                    continue
                outbox.abandoned(seqs, gone, self.fail)

    def _sooner_due(self, deadline: float) -> None:
        if deadline < self._wakes_at:
            self._due_now()

    def _due_now(self) -> None:
        self._wakes_at = math.inf  # awake: any sooner record wakes it again
        self.on_due()

    def fail_unanswered(self) -> None:
        """At close: what is still unanswered gets ``ProducerClosed`` (it may be written)."""
        closed = ProducerClosed(
            "producer closed before the writer answered; the record may still be written"
        )
        for future in self.outbox.take_all():
            self.fail(future, closed)
