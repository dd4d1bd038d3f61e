"""The asyncio producer: :class:`~lancequeue.producer.core.ProducerCore` run as three tasks on
the event loop (sender, reply listener, abandoner); the same contract as
:class:`~lancequeue.producer.Producer`."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.redis_client import (
    is_cluster_url_async,
)
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.outgoing import Outgoing
from lancequeue.producer.results import WriteResult
from lancequeue.producer.settings import ProducerSettings
from lancequeue.producer.tasks import Tasks, wait_event

logger = logging.getLogger(__name__)

AsyncFuture = asyncio.Future[WriteResult]


class AsyncProducer:
    """Sends records to a table's writer through Redis, for asyncio code::

        async with AsyncProducer("docs") as producer:
            future = await producer.enqueue({"id": 1, "vector": vector})
            await future                      # the record is in the table
            await producer.write({"id": 2, "vector": vector})   # the same, in one call

    ``enqueue`` encodes the record, puts it in a bounded buffer and returns its future at once;
    a background task sends what has accumulated while its previous send was in flight. It
    awaits only while the buffer is full (the table's queue is full, or Redis unreachable),
    until the record's deadline (the call's time plus its timeout). A future resolves by the
    deadline plus ``answer_grace_ms`` (plus a second if Redis hangs), unless a writer claimed
    its record first: it then waits for that writer's answer (see ``Producer``).
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        core: ProducerCore[AsyncFuture] = ProducerCore(self.settings, _resolve_ok, _resolve_error)
        self._core = core
        self.keys = core.keys
        self.producer_id = core.outbox.producer_id
        self._tasks: Tasks | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the producer's tasks run on; its futures are made there."""
        self._room = asyncio.Event()  # records left the buffer
        core.buffer.on_room = self._room.set
        self._closed = False
        self._close_done = asyncio.Event()
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect and start sending and listening for replies (``async with`` calls it; so
        does the first ``enqueue``)."""
        async with self._start_lock:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            if self._tasks is not None:
                return
            url = await asyncio.to_thread(
                resolve_redis_url, self.settings.redis_url, self.settings.data_dir
            )
            cluster = await is_cluster_url_async(url)
            self._loop = asyncio.get_running_loop()
            self._tasks = Tasks(self._core, url, cluster, self.settings.redis_timeout_ms / 1000)

    async def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> AsyncFuture:
        """Buffer one record for sending; return a future resolved once it is in the table
        (to a ``WriteResult`` naming the table version that holds it).

        Returns at once unless the send buffer is full; then awaits room until the record's
        deadline (now plus ``timeout`` seconds, default ``timeout_ms``), raising ``QueueFull``
        (the table's queue stayed full) or ``WriteTimeout`` (Redis stayed unreachable) if it got
        none: the record was not written. Raises ``RecordRejected`` at once for a record that
        cannot be encoded or is over ``max_record_bytes`` encoded, and ``ProducerClosed`` after
        ``close()``. Errors of sending later go to the future; so does the writer's answer.
        """
        futures, failed_here = await self._enqueue([record], timeout)
        if failed_here:
            error = failed_here[0].exception()
            assert error is not None
            raise error
        return futures[0]

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[AsyncFuture]:
        """Buffer records in order; one future per record (``RecordRejected`` set on those that
        cannot be encoded or are over ``max_record_bytes``, never sent; ``QueueFull`` or
        ``WriteTimeout`` on those that could not be sent by their deadline, now plus
        ``timeout``). Awaits only for room in the buffer."""
        futures, _ = await self._enqueue(records, timeout)
        return futures

    async def enqueue_delete(
        self, key: Mapping[str, Any], timeout: float | None = None
    ) -> AsyncFuture:
        """Buffer a delete of the rows whose key columns hold ``key``'s values (a map of the
        table's key columns, ``--upsert-key`` or ``--delete-key``); return a future resolved
        once they are gone. Applied in stream order with this table's records around it; waits,
        raises and fails as ``enqueue`` does (a key that is not the table's is rejected)."""
        futures, failed_here = await self._enqueue([key], timeout, delete=True)
        if failed_here:
            error = failed_here[0].exception()
            assert error is not None
            raise error
        return futures[0]

    async def delete(self, key: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        """Delete the rows of ``key`` and wait until they are gone (or raise why not)."""
        return (await self._wait([await self.enqueue_delete(key, timeout)]))[0]

    async def write(self, record: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        """Send one record and wait until it is in the table (or raise why it is not); its
        ``WriteResult`` says in which table version."""
        return (await self.write_many([record], timeout))[0]

    async def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[WriteResult]:
        """Send records together and wait for all; raises the first record's error, else
        returns their ``WriteResult``, in order. That takes ``timeout`` plus
        ``answer_grace_ms`` at most (plus a second if Redis hangs), unless a writer claimed a
        record and its commit takes longer."""
        return await self._wait(await self.enqueue_many(records, timeout))

    @staticmethod
    async def _wait(futures: list[AsyncFuture]) -> list[WriteResult]:
        """Wait for every future, then raise the first one's error; else their results."""
        if futures:
            await asyncio.wait(futures)  # not gather: cancelling the wait leaves the futures be
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    async def close(self, timeout: float | None = None) -> None:
        """Send what is buffered, wait (bounded) for outstanding records to be answered, then
        stop. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        records that cannot be sent at once (queue full, Redis unreachable) and enqueues
        awaiting room get ``ProducerClosed`` and are not written.
        """
        core = self._core
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        async with self._start_lock:
            if self._closed:  # another close() is at work: it is done when it returns
                if self._tasks is None or asyncio.current_task() not in self._tasks.tasks:
                    await self._close_done.wait()
                return
            self._closed = True
            core.close_deadline = deadline
            core.closing = True
            self._room.set()
        tasks = self._tasks
        try:
            if tasks is None:  # never started: nothing was sent
                core.refuse_late(core.buffer.take_all())
            else:
                tasks.buffered.set()
                await tasks.finish(deadline, self.settings.room_recheck_ms / 1000)
        finally:
            core.stopping = True  # even if this close() was cancelled: the loops end
            if tasks is not None:
                tasks.stopping.set()
                tasks.due.set()
            self._close_done.set()

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered by the writer (buffered ones included)."""
        return self._core.outstanding

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
        if getattr(self, "_tasks", None) is not None and not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"<AsyncProducer table={self.keys.table!r} id={self.producer_id}>"

    # -- enqueueing --------------------------------------------------------------------------

    async def _enqueue(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None, delete: bool = False
    ) -> tuple[list[AsyncFuture], list[AsyncFuture]]:
        """Encode and buffer; returns all futures and those failed here."""
        if self._tasks is None or self._closed:
            await self.start()  # raises ProducerClosed once closed
        core = self._core
        assert self._loop is not None
        # The loop as found by start(): asking for the running loop again costs a getpid()
        # system call a record (Python 3.11).
        futures, outgoing = core.register(records, self._loop.create_future, timeout, delete)
        failed = [future for future in futures if future.done()]  # RecordRejected
        placed = core.buffer.put(outgoing)
        if placed < len(outgoing):
            late = await self._wait_for_room(outgoing[placed:])
            if late:
                core.refuse_late(late)
                failed.extend(item.future for item in late)
        elif len(core.buffer) >= self.settings.chunk_records and placed:
            await asyncio.sleep(0)  # a chunk's worth is in: let the sender take it
        return futures, failed

    async def _wait_for_room(
        self, rest: list[Outgoing[AsyncFuture]]
    ) -> list[Outgoing[AsyncFuture]]:
        """Buffer ``rest`` as room is made, until each one's deadline; returns those that got
        none (or came after close())."""
        buffer = self._core.buffer
        try:
            while rest:
                self._room.clear()
                rest = rest[buffer.put(rest) :]
                if not rest or self._closed:
                    break
                left_s = rest[0].deadline - time.monotonic()
                if left_s <= 0:
                    break
                await wait_event(self._room, left_s)
        except BaseException as exc:  # cancelled: what found no room is never sent
            self._core.fail_unsent(rest, exc)
            raise
        return rest

    # -- running the core's loops ------------------------------------------------------------


def _resolve_ok(future: AsyncFuture, result: WriteResult) -> None:
    if not future.done():
        future.set_result(result)


def _resolve_error(future: AsyncFuture, error: LancequeueError) -> None:
    if not future.done():
        future.set_exception(error)
