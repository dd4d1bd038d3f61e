"""The thread-safe, synchronous producer."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed, WriteTimeout
from lancequeue.common.protocol import ENQUEUE_SCRIPT, encode_results
from lancequeue.producer.outbox import Item, Outbox, not_sent_error
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

Future = concurrent.futures.Future

_REPLY_BLOCK_S = 1  # BLPOP timeout: how quickly the reply listener notices a lost wake-up


class Producer:
    """Sends records to a table's writer through Redis; thread-safe.

    ``enqueue`` returns a future that resolves to ``None`` once the record's batch is in the
    table, or raises what the writer reported (``RecordRejected``, ``WriteFailed``)::

        with Producer("docs") as producer:
            producer.write({"id": 1, "text": "hello", "vector": vector})

    Futures cannot be cancelled: a record that was sent is written or answered regardless.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        self._outbox: Outbox[Future[None]] = Outbox(table)
        self.keys = self._outbox.keys
        self.producer_id = self._outbox.producer_id
        url = resolve_redis_url(self.settings.redis_url, self.settings.data_dir)
        self._redis = redis.Redis.from_url(url)
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        # close() waits for sends in progress (_sending) before it fails what is left.
        self._lifecycle = threading.Condition()
        self._closed = False
        self._sending = 0
        self._stop_listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name=f"lancequeue-replies-{table}", daemon=True
        )
        self._listener.start()

    # -- public API --------------------------------------------------------------------------

    def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> Future[None]:
        """Send one record; return a future resolved once it is in the table.

        Blocks while the table's queue is full, raising ``QueueFull`` after ``timeout`` seconds
        (default ``timeout_ms``). Raises ``RecordRejected`` at once for a record that cannot be
        encoded, ``RedisUnavailable`` if Redis cannot be reached, and ``ProducerClosed`` after
        ``close()``.
        """
        futures, failed_here = self._send([record], timeout)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[Future[None]]:
        """Send records in order with as few round trips as possible; one future per record.

        A record that cannot be encoded has its future failed with ``RecordRejected``, and
        records that found no room within ``timeout`` with ``QueueFull``; the others go.
        """
        futures, _ = self._send(records, timeout)
        return futures

    def write(self, record: Mapping[str, Any], timeout: float | None = None) -> None:
        """Send one record and wait until it is in the table (or raise why it is not)."""
        self.write_many([record], timeout)

    def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> None:
        """Send records together (one enqueue-script call per ``chunk_records``) and wait for
        all of them.

        Raises the error of the first record that did not land, after every record is answered
        or ``timeout`` has passed (``WriteTimeout``).
        """
        timeout_s = self._timeout_s(timeout)
        deadline = time.monotonic() + timeout_s
        futures = self.enqueue_many(records, timeout_s)
        _, not_done = concurrent.futures.wait(futures, max(0.0, deadline - time.monotonic()))
        for future in futures:
            if future in not_done:
                raise WriteTimeout(
                    f"no answer from the writer of {self.keys.table!r} "
                    f"within {timeout_s}s; the record may still be written"
                )
            error = future.exception()
            if error is not None:
                raise error

    def close(self, timeout: float | None = None) -> None:
        """Wait (bounded by ``timeout``, default ``close_timeout_ms``) for outstanding records to
        be answered, then stop; later enqueues raise ``ProducerClosed``. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        enqueues waiting for room give up with ``ProducerClosed``.
        """
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            # Sends in progress finish (or, waiting for room, give up within a second).
            self._lifecycle.wait_for(lambda: self._sending == 0, self._room_recheck_s + wait_s)
        concurrent.futures.wait(self._outbox.futures(), max(0.0, deadline - time.monotonic()))
        self._stop_listening.set()
        self._wake_listener()
        if threading.current_thread() is not self._listener:  # close() from a done-callback
            self._listener.join()
        for future in self._outbox.take_all():
            _resolve_error(
                future,
                ProducerClosed(
                    "producer closed before the writer answered; the record may still be written"
                ),
            )
        self._redis.close()

    @property
    def outstanding(self) -> int:
        """Records sent and not yet answered by the writer."""
        return len(self._outbox)

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
        with self._lifecycle:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            self._sending += 1
        try:
            futures, items, rejected = self._outbox.register(records, _running_future)
            for future, error in rejected:
                _resolve_error(future, error)
            failed_here = [future for future, _ in rejected]
            failed_here += self._send_items(items, self._timeout_s(timeout))
            return futures, failed_here
        finally:
            with self._lifecycle:
                self._sending -= 1
                self._lifecycle.notify_all()

    def _send_items(self, items: list[Item[Future[None]]], timeout_s: float) -> list[Future[None]]:
        """Run the enqueue script until every item is in the stream, waiting for room while
        the queue is full. Returns the futures failed for want of room or of Redis."""
        deadline = time.monotonic() + timeout_s
        unsent = items
        pubsub: redis.client.PubSub | None = None
        try:
            while unsent:
                chunk = unsent[: self.settings.chunk_records]
                added = len(
                    self._enqueue_script(
                        keys=self._outbox.script_keys, args=self._outbox.script_args(chunk)
                    )
                )
                unsent = unsent[added:]
                if added == len(chunk):
                    continue
                if pubsub is None:
                    # Subscribe before the next try, so a flush between that try and the wait
                    # below is not missed.
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.keys.flushed_channel)
                    continue
                give_up = self._outbox.give_up_waiting(self._closed, deadline, timeout_s)
                if give_up is not None:
                    return self._outbox.abandon(unsent, give_up, _resolve_error)
                remaining = deadline - time.monotonic()
                # Woken by the writer's next flush; the cap bounds a missed message and close().
                pubsub.get_message(timeout=min(remaining, self._room_recheck_s))
            return []
        except BaseException as exc:  # Redis errors, interrupts, cancellation alike
            # Unsent futures must not hang. A Redis error may have struck after the script ran:
            # RedisUnavailable says the records may be in the stream all the same.
            error = not_sent_error(exc)
            self._outbox.abandon(unsent, error, _resolve_error)
            if isinstance(exc, redis.RedisError):
                raise error from exc
            raise
        finally:
            if pubsub is not None:
                pubsub.close()

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000

    def _timeout_s(self, timeout: float | None) -> float:
        return self.settings.timeout_ms / 1000 if timeout is None else timeout

    # -- replies -----------------------------------------------------------------------------

    def _wake_listener(self) -> None:
        """End the listener's blocking pop now rather than at its timeout: push an empty reply
        (no results) to our own reply list, which nobody else reads."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._outbox.reply_key, encode_results([]))
                pipe.pexpire(self._outbox.reply_key, 60_000)
                pipe.execute()
        except redis.RedisError:
            pass  # the listener ends at its timeout instead

    def _listen(self) -> None:
        """Reply listener: pop this producer's reply list, resolve futures."""
        backoff = Backoff(initial_s=0.1)
        while not self._stop_listening.is_set():
            try:
                popped = self._redis.blpop([self._outbox.reply_key], timeout=_REPLY_BLOCK_S)
                backoff.reset()
            except redis.RedisError as exc:
                delay = backoff.next_delay()
                logger.warning("reply listener: %s; retrying in %.1fs", exc, delay)
                self._stop_listening.wait(delay)
                continue
            if popped is None:
                continue
            self._outbox.settle(popped[1], _resolve_ok, _resolve_error)


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
