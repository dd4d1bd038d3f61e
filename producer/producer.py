"""The thread-safe, synchronous producer: :class:`~lancequeue.producer.core.ProducerCore` run
on three background threads (sender, reply listener, abandoner)."""

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
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.protocol import ABANDON_SCRIPT, ENQUEUE_SCRIPT, encode_results
from lancequeue.common.redis_client import REDIS_FAILURES, SyncRedis, is_cluster_url, sync_client
from lancequeue.producer.calls import REPLY_BLOCK_S, Call, NotStarted, Op, Steps, resume
from lancequeue.producer.commands import redis_commands
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.futures import RecordFuture
from lancequeue.producer.outbox import ABANDON_ATTEMPT_S, REPLY_INFLIGHT_TTL_MS, Outgoing
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

Future = concurrent.futures.Future


class Producer:
    """Sends records to a table's writer through Redis; thread-safe.

    ``enqueue`` returns a future that resolves to ``None`` once the record's batch is in the
    table, or raises why it is not (``RecordRejected``, ``WriteFailed``, ``WriteTimeout``, ...)::

        with Producer("docs") as producer:
            producer.write({"id": 1, "text": "hello", "vector": vector})

    ``enqueue`` encodes the record, puts it in a bounded buffer (``max_buffered_records``) and
    returns at once; a background thread sends what has accumulated while its previous send was
    in flight. Only a full buffer makes ``enqueue`` wait: the queue in Redis is full (the
    cross-process bound, ``max_queue_size``) or Redis is unreachable.

    Each record has a deadline: the enqueue call's time plus its timeout. The producer rides out
    Redis restarts and lost connections until then, sending again what Redis did not confirm.
    A record the writer has not answered by the deadline plus ``answer_grace_ms`` is abandoned in
    Redis and fails with ``WriteTimeout`` (never written), unless a writer claimed it first: its
    future then waits for that writer's answer. If Redis cannot be asked within a second, it
    fails with ``OutcomeUnknown``. Futures cannot be cancelled: a record that was sent is written
    or answered regardless. A record still buffered when the process dies was never confirmed.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        core: ProducerCore[Future[None]] = ProducerCore(self.settings, _resolve_ok, _resolve_error)
        self._core = core
        self.keys = core.keys
        self.producer_id = core.outbox.producer_id
        url = resolve_redis_url(self.settings.redis_url, self.settings.data_dir)
        cluster = is_cluster_url(url)
        timeout_s = self.settings.redis_timeout_ms / 1000
        self._redis = _client(url, cluster, timeout_s)
        try:
            self._replies = _client(url, cluster, timeout_s + REPLY_BLOCK_S)
            self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
        except BaseException:
            self._redis.close()
            raise
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        self._abandon_script = self._abandoner.register_script(ABANDON_SCRIPT)
        self._pubsub: redis.client.PubSub | None = None
        # Where the sender's Redis calls run, one at a time, so that it can stop waiting for
        # one at its records' deadline (see _by_deadline).
        self._calls = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"lancequeue-send-{table}"
        )
        # Buffer changes (records in, room made) and closing; an RLock, as the buffer's
        # callbacks notify it from put() while an enqueue waiting for room holds it.
        self._changed = threading.Condition()
        core.buffer.on_room = core.buffer.on_buffered = self._notify
        self._due = threading.Event()
        core.on_due = self._due.set
        self._lifecycle = threading.Condition()  # close() waits for enqueues in progress
        self._closed = False
        self._close_done = threading.Event()
        self._enqueuing = 0
        self._stopping = threading.Event()  # ends the listener's pauses
        self._ops: dict[Op, Callable[..., Any]] = {
            Op.WAIT_BUFFERED: self._wait_buffered,
            Op.CONNECT: self._connect,
            Op.SUBSCRIBE: self._subscribe,
            Op.AWAIT_FLUSH: self._await_flush,
            Op.UNSUBSCRIBE: self._unsubscribe,
            Op.PAUSE: time.sleep,  # bounded by the core, by close()'s deadline too
            Op.NEXT_REPLY: self._next_reply,
            Op.LISTEN_PAUSE: self._stopping.wait,
            Op.WAIT_DUE: self._wait_due,
            **redis_commands(
                core,
                lambda: self._redis,
                lambda: self._replies,
                lambda: self._enqueue_script,
                lambda: self._abandon_script,
            ),
        }
        self._sender = self._thread(
            core.sender, "sender", lambda: core.closing and not len(core.buffer)
        )
        self._listener = self._thread(core.listener, "replies", lambda: core.stopping)
        self._expirer = self._thread(core.abandoner, "expiry", lambda: core.stopping)
        # Buffered records go before the interpreter exits, even without close().
        self._close_at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._close_at_exit)

    # -- public API --------------------------------------------------------------------------

    def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> Future[None]:
        """Buffer one record for sending; return a future resolved once it is in the table.

        Returns at once unless the send buffer is full, then waits for room until the record's
        deadline (now plus ``timeout`` seconds, default ``timeout_ms``), raising ``QueueFull``
        (the table's queue stayed full) or ``WriteTimeout`` (Redis stayed unreachable) if it got
        none: the record was not written. Raises ``RecordRejected`` at once for a record that
        cannot be encoded or is over ``max_record_bytes`` encoded, and ``ProducerClosed`` after
        ``close()``. Errors of sending later (the deadline passed before Redis took it) go to the
        future; so does the writer's answer.
        """
        futures, failed_here = self._enqueue([record], timeout)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[Future[None]]:
        """Buffer records in order; one future per record. Waits only for room in the buffer.

        Errors go to the futures: ``RecordRejected`` for a record that cannot be encoded or is
        over ``max_record_bytes`` (never sent), ``QueueFull`` or ``WriteTimeout`` for records
        that could not be sent by their deadline (now plus ``timeout``); the others go.
        """
        futures, _ = self._enqueue(records, timeout)
        return futures

    def write(self, record: Mapping[str, Any], timeout: float | None = None) -> None:
        """Send one record and wait until it is in the table (or raise why it is not)."""
        self.write_many([record], timeout)

    def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> None:
        """Send records together and wait for all of them.

        Raises the error of the first record that did not land once every record is answered;
        that takes ``timeout`` plus ``answer_grace_ms`` at most (plus a second if Redis hangs),
        unless a writer claimed a record and its commit takes longer: then its answer is awaited.
        """
        if threading.current_thread() in (self._listener, self._expirer, self._sender):
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
        """Send what is buffered, wait (bounded by ``timeout``, default ``close_timeout_ms``) for
        outstanding records to be answered, then stop; later enqueues raise ``ProducerClosed``.
        Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        records that cannot be sent at once (queue full, Redis unreachable) and enqueues
        waiting for room get ``ProducerClosed`` and are not written.
        """
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        core = self._core
        here = threading.current_thread()
        ours = here in (self._listener, self._expirer, self._sender)
        with self._lifecycle:
            if self._closed:  # another close() is at work: it is done when it returns
                if not ours:
                    self._close_done.wait()
                return
            self._closed = True
            core.close_deadline = deadline
            core.closing = True
            self._notify()  # enqueues waiting for room give up
            self._lifecycle.wait_for(lambda: self._enqueuing == 0, wait_s)
        try:
            self._close(deadline, here, ours)
        finally:
            self._close_done.set()

    def _close(self, deadline: float, here: threading.Thread, ours: bool) -> None:
        core = self._core
        atexit.unregister(self._close_at_exit)
        if here is self._sender:  # close() in a done-callback: the sender cannot wait for itself
            core.refuse_late(core.buffer.take_all())
        else:  # it sends what is buffered, or gives up once close()'s time is up
            self._sender.join(max(0.0, deadline - time.monotonic()) + self._room_recheck_s)
            if self._sender.is_alive():  # held up in a call: what it has not taken fails now
                core.refuse_late(core.buffer.take_all())
        if not ours:  # else the thread that would answer them is the one waiting
            concurrent.futures.wait(core.outbox.futures(), max(0.0, deadline - time.monotonic()))
        core.stopping = True
        self._stopping.set()
        self._due.set()
        reachable = self._wake_listener()
        if here not in (self._listener, self._expirer):
            self._listener.join()  # not from a done-callback, run by one of them
            self._expirer.join()
        if reachable:  # else the in-flight list expires by itself
            self._settle_inflight_at_close()
        core.fail_unanswered()
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._redis.close()
        self._replies.close()
        self._abandoner.close()

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered by the writer (buffered ones included)."""
        return self._core.outstanding

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

    # -- enqueueing --------------------------------------------------------------------------

    def _enqueue(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[Future[None]], list[Future[None]]]:
        """Encode and buffer; returns all futures and those failed here."""
        with self._lifecycle:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            self._enqueuing += 1
        try:
            futures, outgoing = self._core.register(records, RecordFuture, timeout)
            failed = [future for future in futures if future.done()]  # RecordRejected
            late = self._put(outgoing)
            if late:
                self._core.refuse_late(late)
                failed.extend(item.future for item in late)
            return futures, failed
        finally:
            with self._lifecycle:
                self._enqueuing -= 1
                self._lifecycle.notify_all()

    def _put(self, items: list[Outgoing[Future[None]]]) -> list[Outgoing[Future[None]]]:
        """Buffer ``items``, waiting for room until each one's deadline; returns those that
        got none (or came after close()). The producer's own threads (a done-callback) never
        wait: the sender makes room, and the others must not stall answers meanwhile."""
        buffer = self._core.buffer
        ours = threading.current_thread() in (self._sender, self._listener, self._expirer)
        rest = items[buffer.put(items, over_bound=ours) :]
        try:
            with self._changed:
                while rest:
                    rest = rest[buffer.put(rest) :]
                    if not rest or self._closed:
                        break
                    left_s = rest[0].deadline - time.monotonic()
                    if left_s <= 0:
                        break
                    self._changed.wait(left_s)
        except BaseException as exc:  # an interrupt: what found no room is never sent
            self._core.fail_unsent(rest, exc)
            raise
        return rest

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- running the core's loops ------------------------------------------------------------

    def _thread(
        self, steps: Callable[[], Steps], name: str, done: Callable[[], bool]
    ) -> threading.Thread:
        thread = threading.Thread(
            target=self._run_until,
            args=(steps, done),
            name=f"lancequeue-{name}-{self.keys.table}",
            daemon=True,
        )
        thread.start()
        return thread

    def _run_until(self, steps: Callable[[], Steps], done: Callable[[], bool]) -> None:
        """Run a loop of the core; should an exception escape it (a done-callback raising
        SystemExit), start it again: records must not be left unanswered."""
        while True:
            try:
                self._run(steps())
                return
            except BaseException:
                logger.exception("%s: restarting", threading.current_thread().name)
                if done():
                    return

    def _run(self, steps: Steps) -> None:
        call = resume(steps, None, None)
        while call is not None:
            error: BaseException | None = None
            try:
                result = self._perform(call)
            except BaseException as exc:  # the loop decides what a failed call means
                result, error = None, exc
            call = resume(steps, result, error)

    def _perform(self, call: Call) -> Any:
        op = self._ops[call.op]
        if call.timeout_s is None or call.op is Op.ABANDON:  # the abandoner's socket timeout
            return op(*call.args)
        return self._by_deadline(call.timeout_s, op, *call.args)

    def _by_deadline(self, timeout_s: float, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the producer's Redis thread, waiting no longer than the records'
        deadline: a hung Redis must not hold them past it. Calls run one at a time, in order,
        so one left running (its outcome unknown, like a lost connection's) goes before the
        next. Raises ``NotStarted`` if the call had not even started (nothing was sent), a
        Redis ``TimeoutError`` if it had."""
        try:
            running = self._calls.submit(call, *args)
        except RuntimeError:
            if self._core.stopping:  # close() is over: nothing more goes out
                raise NotStarted("the producer is closed") from None
            return call(*args)  # the interpreter is exiting: an atexit close() sends the rest
        try:
            return running.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            if running.cancel():
                raise NotStarted("Redis is still busy with this producer's call before") from None
            raise RedisTimeoutError(
                "no answer from Redis by the records' deadline; the call goes on without them"
            ) from None

    # -- the calls ---------------------------------------------------------------------------

    def _wait_buffered(self, wait_s: float | None) -> None:
        core = self._core
        with self._changed:
            if wait_s is not None:  # a linger: until it ends, or a chunk's worth is in
                self._changed.wait(wait_s)
            else:
                self._changed.wait_for(lambda: len(core.buffer) or core.closing)

    def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._redis
        if isinstance(client, redis.RedisCluster):
            node = client.get_node_from_key(self.keys.stream)  # type: ignore[no-untyped-call]
            client = client.get_redis_connection(node)
        pool = client.connection_pool
        pool.release(pool.get_connection())

    def _subscribe(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
        self._pubsub.subscribe(self.keys.flushed_channel)

    def _await_flush(self, wait_s: float) -> None:
        assert self._pubsub is not None
        self._pubsub.get_message(timeout=wait_s)

    def _unsubscribe(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                pubsub.close()

    def _next_reply(self) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        outbox = self._core.outbox
        with self._replies.pipeline(transaction=False) as pipe:
            pipe.blmove(outbox.reply_key, outbox.inflight_key, REPLY_BLOCK_S)
            pipe.pexpire(outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = pipe.execute()
        return message  # type: ignore[no-any-return]

    def _wait_due(self, wait_s: float | None) -> None:
        self._due.wait(wait_s)
        self._due.clear()  # after the wait: a record numbered meanwhile is seen next turn

    def _wake_listener(self) -> bool:
        """End the listener's blocking pop now rather than at its timeout: push an empty reply
        (no results) to our own reply list, which nobody else reads. False if Redis could not
        be reached (the listener ends at its timeout instead)."""
        reply_key = self._core.outbox.reply_key
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(reply_key, encode_results([]))
                pipe.pexpire(reply_key, 60_000)
                pipe.execute()
        except REDIS_FAILURES:
            return False
        return True

    def _settle_inflight_at_close(self) -> None:
        """Settle and delete what the in-flight list still holds (the listener has stopped)."""
        key = self._core.outbox.inflight_key
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                leftovers, _ = pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._core.settle_leftovers(leftovers)

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000


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


def _close_at_exit(producer: weakref.ref[Producer]) -> None:
    alive = producer()
    if alive is not None:
        alive.close()


def _resolve_ok(future: Future[None]) -> None:
    _settle(future.set_result, None)


def _resolve_error(future: Future[None], error: LancequeueError) -> None:
    _settle(future.set_exception, error)


def _settle(settle: Callable[[Any], None], outcome: Any) -> None:
    """Settle a future; a done-callback raising even ``SystemExit`` must not leave the other
    records of the batch unsettled (``Future`` itself logs only ``Exception``)."""
    try:
        settle(outcome)
    except concurrent.futures.InvalidStateError:  # close() raced the answer
        pass
    except BaseException:
        logger.exception("a done-callback of a record's future raised")
