"""The thread-safe, synchronous producer."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.protocol import (
    ABANDON_SCRIPT,
    ENQUEUE_SCRIPT,
    encode_results,
)
from lancequeue.common.redis_client import REDIS_FAILURES, SyncRedis, is_cluster_url, sync_client
from lancequeue.producer.linger import Linger
from lancequeue.producer.outbox import (
    ABANDON_ATTEMPT_S,
    REPLY_INFLIGHT_TTL_MS,
    Outbox,
    Outgoing,
)
from lancequeue.producer.sending import (
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    Sending,
    closed_unsent,
    is_connection_loss,
    is_refusal,
)
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

Future = concurrent.futures.Future
T = TypeVar("T")

_REPLY_BLOCK_S = 1  # BLMOVE timeout: how often the reply listener checks whether to stop


class Producer:
    """Sends records to a table's writer through Redis; thread-safe.

    ``enqueue`` returns a future that resolves to ``None`` once the record's batch is in the
    table, or raises why it is not (``RecordRejected``, ``WriteFailed``, ``WriteTimeout``, ...)::

        with Producer("docs") as producer:
            producer.write({"id": 1, "text": "hello", "vector": vector})

    Each record has a deadline: the enqueue call's time plus its timeout. The producer rides out
    Redis restarts and lost connections until then, sending again what Redis did not confirm.
    A record the writer has not answered by the deadline plus ``answer_grace_ms`` is abandoned in
    Redis and fails with ``WriteTimeout`` (never written), unless a writer claimed it first: its
    future then waits for that writer's answer. If Redis cannot be asked within a second, it
    fails with ``OutcomeUnknown``. Futures cannot be cancelled: a record that was sent is written
    or answered regardless.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        self._outbox: Outbox[Future[None]] = Outbox(
            table,
            self.settings.answer_grace_ms / 1000,
            self.settings.max_record_bytes,
            self.settings.pack_records,
        )
        self.keys = self._outbox.keys
        self.producer_id = self._outbox.producer_id
        self._entries = self._outbox.entries
        url = resolve_redis_url(self.settings.redis_url, self.settings.data_dir)
        cluster = is_cluster_url(url)
        self._redis = _client(url, cluster, self.settings.redis_timeout_ms / 1000)
        try:
            self._replies = _client(
                url, cluster, self.settings.redis_timeout_ms / 1000 + _REPLY_BLOCK_S
            )
            self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
        except BaseException:
            self._redis.close()
            raise
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        # Where blocking sends run, one at a time, so that a caller can stop waiting for one
        # at its records' deadline (see _by_deadline).
        self._calls = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"lancequeue-send-{table}"
        )
        self._abandon_script = self._abandoner.register_script(ABANDON_SCRIPT)
        # One send at a time, so sequence numbers follow stream order; _sender is the send
        # holding the lock (what blocks it tells the others what they fail with).
        self._send_lock = threading.Lock()
        self._sender: Sending[Future[None]] | None = None
        # close() waits for sends in progress (_sending) before it fails what is left.
        self._lifecycle = threading.Condition()
        self._closed = False
        self._closing = threading.Event()  # set by close(): ends pauses between reconnections
        self._sending = 0
        self._stop_listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name=f"lancequeue-replies-{table}", daemon=True
        )
        self._listener.start()
        self._due_changed = threading.Event()
        self._outbox.on_sooner_due = self._due_changed.set
        self._expirer = threading.Thread(
            target=self._abandon_when_due, name=f"lancequeue-expiry-{table}", daemon=True
        )
        self._expirer.start()
        self._linger: Linger[Future[None]] | None = None
        if self.settings.linger_ms:
            self._linger = Linger(
                self.settings.linger_ms / 1000,
                self.settings.chunk_records,
                self.settings.max_buffered_records,
                self._send_buffered,
                f"lancequeue-sender-{table}",
            )
            # Buffered records go before the interpreter exits, even without close().
            self._close_at_exit = functools.partial(_close_at_exit, weakref.ref(self))
            atexit.register(self._close_at_exit)

    # -- public API --------------------------------------------------------------------------

    def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> Future[None]:
        """Send one record; return a future resolved once it is in the table.

        The record's deadline is now plus ``timeout`` seconds (default ``timeout_ms``). Blocks
        while the table's queue is full or Redis is unreachable, raising ``QueueFull`` or
        ``WriteTimeout`` if the record could not be sent by its deadline (it was not written).
        Raises ``RecordRejected`` at once for a record that cannot be encoded or is over
        ``max_record_bytes`` encoded, and ``ProducerClosed`` after ``close()``. A record whose
        send Redis never confirmed may be in the stream: its future is returned, and resolves
        from the writer's answer or, lacking one, as the producer abandons it after the deadline
        plus ``answer_grace_ms``.

        With ``linger_ms`` set, the record is buffered and sent from a background thread: this
        returns at once (or once the buffer has room, raising ``QueueFull``/``WriteTimeout`` if
        it got none by the deadline), and errors of sending go to the future.
        """
        futures, failed_here = self._send([record], timeout)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[Future[None]]:
        """Send records in order with as few round trips as possible; one future per record.

        Errors go to the futures: ``RecordRejected`` for a record that cannot be encoded or is
        over ``max_record_bytes`` (never sent), ``QueueFull`` or ``WriteTimeout`` for records
        that could not be sent by their deadline (now plus ``timeout``); the others go. With
        ``linger_ms`` set, the records join the send buffer and go from the background thread.
        """
        futures, _ = self._send(records, timeout)
        return futures

    def write(self, record: Mapping[str, Any], timeout: float | None = None) -> None:
        """Send one record and wait until it is in the table (or raise why it is not)."""
        self.write_many([record], timeout)

    def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> None:
        """Send records together (one enqueue-script call per ``chunk_records`` or
        ``chunk_bytes``) and wait for all of them.

        Raises the error of the first record that did not land once every record is answered;
        that takes ``timeout`` plus ``answer_grace_ms`` at most (plus a second if Redis hangs),
        unless a writer claimed a record and its commit takes longer: then its answer is awaited.
        """
        linger_thread = None if self._linger is None else self._linger.thread
        if threading.current_thread() in (self._listener, self._expirer, linger_thread):
            raise LancequeueError(
                "write() in a future's done-callback would wait for answers only the thread "
                "running that callback can deliver; use enqueue() there"
            )
        futures = self.enqueue_many(records, timeout)
        concurrent.futures.wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def close(self, timeout: float | None = None) -> None:
        """Wait (bounded by ``timeout``, default ``close_timeout_ms``) for outstanding records to
        be answered, then stop; later enqueues raise ``ProducerClosed``. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        enqueues waiting for room or for Redis give up with ``ProducerClosed``.
        """
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            # Sends in progress finish (or, waiting for room, give up within a second).
            self._lifecycle.wait_for(lambda: self._sending == 0, self._room_recheck_s + wait_s)
        if self._linger is not None:  # what is buffered goes now, if the queue has room
            atexit.unregister(self._close_at_exit)
            for record in self._linger.close():  # left unsent by a close() in a callback
                _resolve_error(record.future, closed_unsent())
        concurrent.futures.wait(self._outbox.futures(), max(0.0, deadline - time.monotonic()))
        self._stop_listening.set()
        self._due_changed.set()
        reachable = self._wake_listener()
        if threading.current_thread() not in (self._listener, self._expirer):
            self._listener.join()  # not from a done-callback, run by one of them
            self._expirer.join()
        if reachable:  # else the in-flight list expires by itself
            self._settle_inflight_at_close()
        for future in self._outbox.take_all():
            _resolve_error(
                future,
                ProducerClosed(
                    "producer closed before the writer answered; the record may still be written"
                ),
            )
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._redis.close()
        self._replies.close()
        self._abandoner.close()

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered by the writer (buffered ones included)."""
        return len(self._outbox) + (0 if self._linger is None else len(self._linger))

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"<Producer table={self.keys.table!r} id={self.producer_id}>"

    # -- sending -----------------------------------------------------------------------------

    def _send(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[Future[None]], list[Future[None]]]:
        """Register and send; returns all futures and those failed here, before any answer."""
        timeout_s = self.settings.timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        with self._lifecycle:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            self._sending += 1
        try:
            futures, outgoing, rejected = self._outbox.register(records, _running_future, deadline)
            for future, error in rejected:
                _resolve_error(future, error)
            if self._linger is not None:
                no_room = self._linger.put(outgoing, timeout_s)
                outgoing = no_room  # sent from the buffer, or failed below as never sent
            sending = self._sending_of(outgoing, timeout_s)
            if not sending.done:
                if self._linger is None:
                    self._send_in_turn(sending)
                elif self._closed:
                    sending.closed()
                else:
                    sending.give_up(sending.not_sent_in_time(self._sender))
            return futures, [future for future, _ in rejected] + sending.failed
        finally:
            with self._lifecycle:
                self._sending -= 1
                self._lifecycle.notify_all()

    def _sending_of(
        self, records: list[Outgoing[Future[None]]], timeout_s: float
    ) -> Sending[Future[None]]:
        """Records of one timeout as one send; its deadline is the first (earliest) one's."""
        return Sending(
            self._outbox,
            records,
            records[0].deadline if records else time.monotonic() + timeout_s,
            timeout_s,
            self.settings.chunk_records,
            self.settings.chunk_bytes,
            _resolve_error,
        )

    def _send_buffered(self, records: list[Outgoing[Future[None]]], timeout_s: float) -> None:
        """The sender thread's send of buffered records: errors go to their futures."""
        self._send_in_turn(self._sending_of(records, timeout_s))

    def _send_in_turn(self, sending: Sending[Future[None]]) -> None:
        """Send once this producer's earlier sends are done (waiting counts against the
        deadline: records queued behind a send that waits for room wait for room too)."""
        if not self._send_lock.acquire(timeout=sending.remaining_s()):
            sending.give_up(sending.not_sent_in_time(self._sender))
            return
        self._sender = sending
        try:
            self._send_locked(sending)
        except RedisError as exc:  # neither a lost connection nor a refusal: fail the records
            sending.interrupted(exc)
        except BaseException as exc:  # interrupts: nothing unsent may hang
            sending.interrupted(exc)
            raise
        finally:
            self._sender = None
            self._send_lock.release()

    def _send_locked(self, sending: Sending[Future[None]]) -> None:
        """Run the enqueue script until every record is in the stream: waiting for room while
        the queue is full, reconnecting and sending again while Redis is unreachable, until
        the deadline."""
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        pubsub: redis.client.PubSub | None = None
        try:
            while not sending.done:
                if sending.expired():
                    sending.give_up(sending.not_sent_in_time())
                    break
                try:
                    self._by_deadline(sending, self._connect)  # nothing is sent by this
                except Exception as exc:
                    if not is_connection_loss(exc) and not isinstance(exc, _NotStarted):
                        sending.refused(exc)
                        break
                    sending.unreachable(exc)
                    self._pause(sending, backoff)
                    continue
                args = sending.next_args()
                if args is None:
                    continue  # the deadline passed meanwhile
                try:
                    ids = self._by_deadline(sending, self._run_enqueue_script, args)
                except _NotStarted as exc:
                    sending.unreachable(exc)
                    continue
                except BaseException as exc:
                    if is_refusal(exc):
                        sending.refused(exc)
                        break
                    sending.unconfirmed(exc)
                    if not is_connection_loss(exc):
                        raise
                    self._pause(sending, backoff)
                    continue
                backoff.reset()
                if sending.added(len(ids)):
                    continue
                # The queue is full: wait for the writer's next flush.
                if self._closed:
                    sending.closed()
                    break
                try:
                    if pubsub is None:
                        # Subscribe, then try again at once: a flush between the last try and
                        # the subscription would otherwise be missed.
                        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
                        self._by_deadline(sending, pubsub.subscribe, self.keys.flushed_channel)
                        continue
                    # The cap bounds a missed message and how long close() waits.
                    pubsub.get_message(timeout=min(sending.remaining_s(), self._room_recheck_s))
                except Exception as exc:
                    if not is_connection_loss(exc) and not isinstance(exc, _NotStarted):
                        raise
                    _close_quietly(pubsub)
                    pubsub = None
                    sending.unreachable(exc)
                    self._pause(sending, backoff)
        finally:
            _close_quietly(pubsub)

    def _by_deadline(self, sending: Sending[Future[None]], call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the producer's Redis thread, waiting no longer than the records'
        deadline: a hung Redis must not hold ``enqueue`` past it. Calls run one at a time, in
        order, so one left running (its outcome unknown, like a lost connection's) goes
        before the next. Raises ``_NotStarted`` if the call had not even started (nothing was
        sent), a Redis ``TimeoutError`` if it had."""
        try:
            running = self._calls.submit(call, *args)
        except RuntimeError:  # the interpreter is exiting: an atexit close() sends what is left
            return call(*args)
        try:
            return running.result(timeout=sending.remaining_s())
        except concurrent.futures.TimeoutError:
            if running.cancel():
                raise _NotStarted("Redis is still busy with this producer's call before") from None
            raise RedisTimeoutError(
                "no answer from Redis by the records' deadline; the call goes on without them"
            ) from None

    def _run_enqueue_script(self, args: list[bytes | str | int]) -> list[bytes]:
        ids: list[bytes] = self._enqueue_script(keys=self._entries.script_keys, args=args)
        return ids

    def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._redis
        if isinstance(client, redis.RedisCluster):
            node = client.get_node_from_key(self.keys.stream)  # type: ignore[no-untyped-call]
            client = client.get_redis_connection(node)
        pool = client.connection_pool
        pool.release(pool.get_connection())
        entries = self._entries
        if entries.config_stale(time.monotonic()):
            if entries.learn_config(self._read_config(), 0.0):
                self._redis.setnx(self.keys.epoch, entries.new_epoch())
            entries.learn_config(self._read_config(), time.monotonic())

    def _read_config(self) -> list[bytes | str | None]:
        client = self._redis
        return [
            client.hget(self.keys.config, self._entries.config_field),
            client.get(self.keys.epoch),
        ]

    def _pause(self, sending: Sending[Future[None]], backoff: Backoff) -> None:
        """Wait before reconnecting (bounded by the deadline; close() ends the wait and the
        send)."""
        if self._closed:
            sending.closed()
            return
        self._closing.wait(min(backoff.next_delay(), sending.remaining_s()))

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000

    # -- replies -----------------------------------------------------------------------------

    def _wake_listener(self) -> bool:
        """End the listener's blocking pop now rather than at its timeout: push an empty reply
        (no results) to our own reply list, which nobody else reads. False if Redis could not
        be reached (the listener ends at its timeout instead)."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._outbox.reply_key, encode_results([]))
                pipe.pexpire(self._outbox.reply_key, 60_000)
                pipe.execute()
        except REDIS_FAILURES:
            return False
        return True

    def _listen(self) -> None:
        """Reply listener: move each message of this producer's reply list to its in-flight
        list, resolve the futures it answers, then drop it from there; fail the records not
        answered by their deadline plus the answer grace. Keeps going through lost connections
        and Redis restarts: after one, it first settles what the in-flight list holds (a
        message Redis moved whose reply the lost connection never delivered)."""
        backoff = Backoff(initial_s=0.1, max_s=_REPLY_BLOCK_S)
        recover = False
        while not self._stop_listening.is_set():
            try:
                if recover:
                    self._settle_inflight()
                    recover = False
                message = self._next_reply()
                backoff.reset()
                if message is not None:
                    self._outbox.settle(message, _resolve_ok, _resolve_error)
                    if not self._stop_listening.is_set():  # else close() deletes the list
                        self._replies.lrem(self._outbox.inflight_key, 1, message)  # type: ignore[arg-type]
                elif len(self._outbox):
                    # A connection lost while blocked may have had a message moved for it.
                    recover = True
            except Exception as exc:  # Redis errors above all; nothing may end the listener
                recover = True
                delay = backoff.next_delay()
                logger.warning(
                    "reply listener: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                )
                self._stop_listening.wait(delay)

    def _abandon_when_due(self) -> None:
        """Abandon each record the writer has not answered by its deadline plus the answer
        grace, in Redis, atomically against the writer's claim: one abandoned fails with
        ``WriteTimeout`` (never written), one claimed waits for its answer. It runs apart from
        the reply listener, whose reads may block on a hung Redis, and tries in short calls,
        so a record's future resolves within ``ABANDON_WITHIN_S`` of its deadline plus the
        grace (``OutcomeUnknown`` if Redis could not be asked by then)."""
        while not self._stop_listening.is_set():
            self._due_changed.clear()
            due, wait_s = self._outbox.to_abandon(time.monotonic())
            if not due:
                self._due_changed.wait(wait_s)
                continue
            for seqs, args in self._outbox.abandon_calls(due):
                try:
                    gone = self._abandon_script(keys=self._outbox.abandon_keys, args=args)
                except REDIS_FAILURES as exc:
                    self._outbox.unreachable(seqs, exc, time.monotonic(), _resolve_error)
                    continue
                self._outbox.abandoned(seqs, gone, _resolve_error)

    def _next_reply(self) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        with self._replies.pipeline(transaction=False) as pipe:
            pipe.blmove(self._outbox.reply_key, self._outbox.inflight_key, _REPLY_BLOCK_S)
            pipe.pexpire(self._outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = pipe.execute()
        return message  # type: ignore[no-any-return]

    def _settle_inflight(self) -> None:
        """Settle the messages left in the in-flight list, then drop them from it."""
        key = self._outbox.inflight_key
        leftovers: list[bytes] = self._replies.lrange(key, 0, -1)  # type: ignore[assignment]
        self._outbox.settle_all(leftovers, _resolve_ok, _resolve_error)
        if leftovers:
            self._replies.ltrim(key, len(leftovers), -1)

    def _settle_inflight_at_close(self) -> None:
        """Settle and delete what the in-flight list still holds (the listener has stopped)."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self._outbox.inflight_key, 0, -1)
                pipe.delete(self._outbox.inflight_key)
                leftovers, _ = pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._outbox.settle_all(leftovers, _resolve_ok, _resolve_error)


class _NotStarted(Exception):
    """A call to Redis waited for the one before it past the records' deadline: never run."""


def _client(url: str, cluster: bool, socket_timeout_s: float) -> SyncRedis:
    """A client that never repeats a command by itself: the producer decides what to send
    again after a lost connection."""
    return sync_client(
        url,
        cluster,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )


def _close_quietly(pubsub: redis.client.PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(*REDIS_FAILURES):
            pubsub.close()


def _close_at_exit(producer: weakref.ref[Producer]) -> None:
    alive = producer()
    if alive is not None:
        alive.close()


def _running_future() -> Future[None]:
    """A future that ``cancel()`` cannot cancel: a sent record is answered regardless."""
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    return future


def _resolve_ok(future: Future[None]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # close() raced the answer
        future.set_result(None)


def _resolve_error(future: Future[None], error: LancequeueError) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # close() raced the answer
        future.set_exception(error)
