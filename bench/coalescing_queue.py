"""An in-process coalescing write queue in front of a LanceDB ``AsyncTable``: lancequeue's
single-process ancestor, as baseline (b) runs it.

``enqueue(record)`` returns a future resolved once the record's batch is appended. The flush
task appends one batch ``coalesce_ms`` after the batch's first record arrived, or as soon as
``max_batch`` records are in hand. At ``max_queue_size`` queued records ``enqueue`` waits for
room. A failed append fails every future of its batch; the queue keeps running. ``stop()``
flushes what is queued, then ends the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

_Item = tuple[dict[str, Any], "asyncio.Future[None]"]


class CoalescingQueue:
    """Coalesces concurrent single-record writes into batched appends to one table."""

    def __init__(
        self,
        table: Any,
        to_arrow: Callable[[list[dict[str, Any]]], Any],
        max_batch: int,
        coalesce_ms: int,
        max_queue_size: int,
    ) -> None:
        self._table = table
        self._to_arrow = to_arrow
        self._max_batch = max_batch
        self._coalesce_s = coalesce_ms / 1000
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(max_queue_size)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Appends made so far."""

    def start(self) -> None:
        """Start the flush task (in the running event loop)."""
        self._task = asyncio.create_task(self._flush_loop(), name="coalescing-queue")

    async def enqueue(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue ``record`` (waiting while the queue is full); a future resolved once it is in
        the table, or failed with the append's error."""
        if self._task is None or self._task.done():
            raise RuntimeError("the queue is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        return future

    async def stop(self) -> None:
        """Flush every queued record, then stop the flush task."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task

    async def _next_batch(self, first: _Item) -> tuple[list[_Item], bool]:
        """The batch starting with ``first``; whether the stop mark was met."""
        batch = [first]
        deadline = asyncio.get_running_loop().time() + self._coalesce_s
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    async def _flush_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch, stopping = await self._next_batch(first)
            try:
                await self._table.add(self._to_arrow([record for record, _ in batch]))
            except Exception as exc:  # the append's failure is every caller's answer
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
            self.batches += 1
