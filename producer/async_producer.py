"""The asyncio producer: the same contract as :class:`~lancequeue.producer.Producer`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed, QueueFull, WriteTimeout
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import ENQUEUE_SCRIPT, decode_results
from lancequeue.producer.outbox import Outbox, not_sent_error
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

_REPLY_BLOCK_S = 1
_BACKOFF_MAX_S = 5.0


class AsyncProducer:
    """Sends records to a table's writer through Redis, for asyncio code::

        async with AsyncProducer("docs") as producer:
            future = await producer.enqueue({"id": 1, "vector": vector})
            await future                      # the record is in the table
            await producer.write({"id": 2, "vector": vector})   # the same, in one call

    ``enqueue`` awaits while the table's queue is full and raises ``QueueFull`` after its timeout.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(
            table=table,
            redis_url=redis_url,
            data_dir=Path(data_dir) if data_dir else None,
            **settings,
        )
        self.keys = TableKeys(table)
        self.producer_id = uuid.uuid4().hex
        self._outbox: Outbox[asyncio.Future[None]] = Outbox(
            self.keys, self.keys.reply(self.producer_id)
        )
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self._listening = False
        self._send_lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect and start listening for replies (``async with`` calls it)."""
        if self._redis is not None:
            return
        url = await asyncio.to_thread(
            resolve_redis_url, self.settings.redis_url, self.settings.data_dir
        )
        self._redis = aioredis.Redis.from_url(url)
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        self._listening = True
        self._listener = asyncio.create_task(self._listen(), name="lancequeue-replies")

    async def enqueue(
        self, record: Mapping[str, Any], timeout: float | None = None
    ) -> asyncio.Future[None]:
        """Send one record; return a future resolved once it is in the table.

        Awaits while the queue is full, raising ``QueueFull`` after ``timeout`` seconds.
        """
        futures = await self.enqueue_many([record], timeout)
        future = futures[0]
        if future.done() and isinstance(future.exception(), QueueFull):
            raise future.exception()  # type: ignore[misc]
        return future

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[asyncio.Future[None]]:
        """Send records in order; one future per record (``QueueFull`` set on those that found
        no room within ``timeout``)."""
        if self._closed:
            raise ProducerClosed(f"{self!r} is closed")
        await self.start()
        assert self._redis is not None
        loop = asyncio.get_running_loop()
        timeout_s = self._timeout_s(timeout)
        items = self._outbox.register(records, loop.create_future)
        deadline = time.monotonic() + timeout_s
        # One sender at a time: callers queue here in order (FIFO under back-pressure) instead
        # of each holding a Redis connection.
        async with self._send_lock:
            await self._send(items, deadline, timeout_s)
        return [future for _, _, future in items]

    async def _send(
        self,
        items: list[tuple[int, bytes, asyncio.Future[None]]],
        deadline: float,
        timeout_s: float,
    ) -> None:
        assert self._redis is not None
        unsent = items
        pubsub: aioredis.client.PubSub | None = None
        try:
            while unsent:
                chunk = unsent[: self.settings.chunk_records]
                ids = await self._enqueue_script(
                    keys=self._outbox.script_keys, args=self._outbox.script_args(chunk)
                )
                added = len(ids)
                unsent = unsent[added:]
                if added == len(chunk):
                    continue
                if pubsub is None:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.keys.flushed_channel)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = QueueFull(f"table {self.keys.table!r}: queue full for {timeout_s}s")
                    self._outbox.abandon(unsent, error, _resolve_error)
                    break
                await pubsub.get_message(timeout=min(remaining, 1.0))
        except RedisError as exc:
            unreachable = not_sent_error(exc)
            self._outbox.abandon(unsent, unreachable, _resolve_error)
            raise unreachable from exc
        except BaseException as exc:  # cancellation too: unsent futures must not hang
            self._outbox.abandon(unsent, not_sent_error(exc), _resolve_error)
            raise
        finally:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

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
        """Wait (bounded) for outstanding records to be answered, then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        pending = self._outbox.futures()
        if pending:
            await asyncio.wait(pending, timeout=wait_s)
        if self._listener is not None:
            # The flag ends the loop even if redis-py swallows the cancellation mid-command.
            self._listening = False
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        for future in self._outbox.take_all():
            if not future.done():
                future.set_exception(
                    ProducerClosed(
                        "producer closed before the writer answered; "
                        "the record may still be written"
                    )
                )
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

    def _timeout_s(self, timeout: float | None) -> float:
        return self.settings.timeout_ms / 1000 if timeout is None else timeout

    async def _listen(self) -> None:
        assert self._redis is not None
        backoff_s = 0.1
        while self._listening:
            try:
                popped = await self._redis.blpop([self._outbox.reply_key], timeout=_REPLY_BLOCK_S)
                backoff_s = 0.1
            except RedisError as exc:
                logger.warning("reply listener: %s; retrying in %.1fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)
                continue
            if popped is None:
                continue
            try:
                message = popped[1]
                results = decode_results(
                    message if isinstance(message, bytes) else message.encode()
                )
            except ValueError as exc:
                logger.error("malformed reply on %s: %s", self._outbox.reply_key, exc)
                continue
            self._outbox.settle(results, _resolve_ok, _resolve_error)


def _resolve_ok(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_error(future: asyncio.Future[None], error: LancequeueError) -> None:
    if not future.done():
        future.set_exception(error)
