"""The asyncio producer: the same contract as :class:`~lancequeue.producer.Producer`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed, QueueFull, WriteTimeout
from lancequeue.common.protocol import ENQUEUE_SCRIPT
from lancequeue.producer.outbox import Item, Outbox, not_sent_error
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

_REPLY_BLOCK_S = 1

AsyncFuture = asyncio.Future[None]


class AsyncProducer:
    """Sends records to a table's writer through Redis, for asyncio code::

        async with AsyncProducer("docs") as producer:
            future = await producer.enqueue({"id": 1, "vector": vector})
            await future                      # the record is in the table
            await producer.write({"id": 2, "vector": vector})   # the same, in one call

    ``enqueue`` awaits while the table's queue is full and raises ``QueueFull`` after its timeout.
    Concurrent callers send one at a time, in order, over one connection.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        self._outbox: Outbox[AsyncFuture] = Outbox(table)
        self.keys = self._outbox.keys
        self.producer_id = self._outbox.producer_id
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._sending = 0
        self._idle = asyncio.Event()  # set while no send is in progress
        self._idle.set()

    async def start(self) -> None:
        """Connect and start listening for replies (``async with`` calls it)."""
        async with self._start_lock:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            if self._redis is not None:
                return
            url = await asyncio.to_thread(
                resolve_redis_url, self.settings.redis_url, self.settings.data_dir
            )
            self._redis = aioredis.Redis.from_url(url)
            self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
            self._listener = asyncio.create_task(self._listen(), name="lancequeue-replies")

    async def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> AsyncFuture:
        """Send one record; return a future resolved once it is in the table.

        Awaits while the queue is full, raising ``QueueFull`` after ``timeout`` seconds; raises
        ``RecordRejected`` at once for a record that cannot be encoded.
        """
        futures, failed_here = await self._send(records=[record], timeout=timeout)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[AsyncFuture]:
        """Send records in order; one future per record (``RecordRejected`` set on those that
        cannot be encoded, ``QueueFull`` on those that found no room within ``timeout``)."""
        futures, _ = await self._send(records, timeout)
        return futures

    async def write(self, record: Mapping[str, Any], timeout: float | None = None) -> None:
        """Send one record and wait until it is in the table (or raise why it is not)."""
        await self.write_many([record], timeout)

    async def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> None:
        """Send records together and wait for all; raises the first record's error."""
        timeout_s = self._timeout_s(timeout)
        deadline = time.monotonic() + timeout_s
        futures = await self.enqueue_many(records, timeout_s)
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future in futures:
            if not future.done():
                raise WriteTimeout(
                    f"no answer from the writer of {self.keys.table!r} "
                    f"within {timeout_s}s; the record may still be written"
                )
            error = future.exception()
            if error is not None:
                raise error

    async def close(self, timeout: float | None = None) -> None:
        """Wait (bounded) for outstanding records to be answered, then stop. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written).
        """
        async with self._start_lock:
            if self._closed:
                return
            self._closed = True
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        # Sends in progress finish (or, waiting for room, give up within a second).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._room_recheck_s + wait_s)
        pending = self._outbox.futures()
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        closed = ProducerClosed(
            "producer closed before the writer answered; the record may still be written"
        )
        for future in self._outbox.take_all():
            _resolve_error(future, closed)
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def outstanding(self) -> int:
        """Records sent and not yet answered by the writer."""
        return len(self._outbox)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_redis", None) is not None and not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"<AsyncProducer table={self.keys.table!r} id={self.producer_id}>"

    # -- sending -----------------------------------------------------------------------------

    async def _send(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[AsyncFuture], list[AsyncFuture]]:
        """Register and send; returns all futures and those failed here, before any answer."""
        await self.start()  # raises ProducerClosed once closed
        self._sending += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            futures, items, rejected = self._outbox.register(records, loop.create_future)
            for future, error in rejected:
                _resolve_error(future, error)
            failed_here = [future for future, _ in rejected]
            failed_here += await self._send_items(items, self._timeout_s(timeout))
            return futures, failed_here
        finally:
            self._sending -= 1
            if self._sending == 0:
                self._idle.set()

    async def _send_items(
        self, items: list[Item[AsyncFuture]], timeout_s: float
    ) -> list[AsyncFuture]:
        """Send under the send lock (FIFO), waiting for room while the queue is full. Returns
        the futures failed for want of room or of Redis."""
        deadline = time.monotonic() + timeout_s
        try:
            # The timeout covers the wait for the lock too: callers queued behind a sender that
            # waits for room are themselves waiting for room.
            await asyncio.wait_for(self._send_lock.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            full = QueueFull(f"table {self.keys.table!r}: queue full for {timeout_s}s")
            return self._outbox.abandon(items, full, _resolve_error)
        except BaseException as exc:  # cancelled while queued: nothing was sent
            self._outbox.abandon(items, not_sent_error(exc), _resolve_error)
            raise
        try:
            return await self._send_locked(items, deadline, timeout_s)
        finally:
            self._send_lock.release()

    async def _send_locked(
        self, items: list[Item[AsyncFuture]], deadline: float, timeout_s: float
    ) -> list[AsyncFuture]:
        assert self._redis is not None
        unsent = items
        pubsub: aioredis.client.PubSub | None = None
        try:
            while unsent:
                chunk = unsent[: self.settings.chunk_records]
                ids = await self._enqueue_script(
                    keys=self._outbox.script_keys, args=self._outbox.script_args(chunk)
                )
                unsent = unsent[len(ids) :]
                if len(ids) == len(chunk):
                    continue
                if pubsub is None:
                    # Subscribe before the next try, so no flush in between is missed.
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.keys.flushed_channel)
                    continue
                give_up = self._outbox.give_up_waiting(self._closed, deadline, timeout_s)
                if give_up is not None:
                    return self._outbox.abandon(unsent, give_up, _resolve_error)
                remaining = deadline - time.monotonic()
                # Woken by the writer's next flush; the cap bounds a missed message and close().
                await pubsub.get_message(timeout=min(remaining, self._room_recheck_s))
            return []
        except BaseException as exc:  # Redis errors, interrupts, cancellation alike
            # Unsent futures must not hang. A Redis error may have struck after the script ran:
            # RedisUnavailable says the records may be in the stream all the same.
            error = not_sent_error(exc)
            self._outbox.abandon(unsent, error, _resolve_error)
            if isinstance(exc, RedisError):
                raise error from exc
            raise
        finally:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000

    def _timeout_s(self, timeout: float | None) -> float:
        return self.settings.timeout_ms / 1000 if timeout is None else timeout

    # -- replies -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._redis is not None
        backoff = Backoff(initial_s=0.1)
        while not self._closed or self._outbox.futures():
            try:
                popped = await self._redis.blpop([self._outbox.reply_key], timeout=_REPLY_BLOCK_S)
                backoff.reset()
            except RedisError as exc:
                delay = backoff.next_delay()
                logger.warning("reply listener: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if popped is None:
                continue
            self._outbox.settle(popped[1], _resolve_ok, _resolve_error)


def _resolve_ok(future: AsyncFuture) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_error(future: AsyncFuture, error: LancequeueError) -> None:
    if not future.done():
        future.set_exception(error)
