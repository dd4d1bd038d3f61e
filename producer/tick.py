"""Records enqueued one by one in the same event-loop tick go to Redis together.

``AsyncProducer.enqueue`` of one record, called from many tasks at once, would cost one
enqueue-script call each. Instead the records enqueued before the loop next runs its callbacks
(and with the same timeout) are sent by one ``enqueue_many``-like send, packed like any other:
one call, a few stream entries. Each caller still gets its own record's future, or its own
error.

Cancelling a caller before its tick's send starts leaves its record unsent; after it started,
the send is cancelled once every caller waiting on it was (a send that others still wait for
goes on, and the cancelled caller's record may be written).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

AsyncFuture = asyncio.Future[None]
SendMany = Callable[
    [list[Mapping[str, Any]], float | None],
    Awaitable[tuple[list[AsyncFuture], list[AsyncFuture]]],
]
"""Sends records with one timeout: all futures, and those failed before any answer."""


class _Tick:
    """The records of one timeout enqueued in one tick, and the send that carries them."""

    def __init__(self) -> None:
        self.records: list[Mapping[str, Any] | None] = []  # None: cancelled before the send
        self.positions: list[int] = []  # each record's place among those sent
        self.waiting = 0
        self.started = asyncio.Event()
        self.send: asyncio.Task[tuple[list[AsyncFuture], set[int]]] | None = None


class TickSender:
    """Coalesces single-record enqueues of one event-loop tick into one send."""

    def __init__(self, send_many: SendMany) -> None:
        self._send_many = send_many
        self._open: dict[float | None, _Tick] = {}

    async def send(self, record: Mapping[str, Any], timeout: float | None) -> AsyncFuture:
        """Send ``record`` with the others of this tick; its future, or raise what it failed
        with before any answer (``RecordRejected``, ``QueueFull``, ``WriteTimeout``...)."""
        tick = self._open.get(timeout)
        if tick is None:
            tick = self._open[timeout] = _Tick()
            asyncio.get_running_loop().call_soon(self._start, timeout, tick)
        index = len(tick.records)
        tick.records.append(record)
        tick.waiting += 1
        try:
            await tick.started.wait()
            assert tick.send is not None
            futures, failed = await asyncio.shield(tick.send)
        except asyncio.CancelledError:
            self._cancelled(tick, index)
            raise
        tick.waiting -= 1
        future = futures[tick.positions[index]]
        if id(future) in failed:
            error = future.exception()
            assert error is not None
            raise error
        return future

    def _start(self, timeout: float | None, tick: _Tick) -> None:
        if self._open.get(timeout) is tick:
            del self._open[timeout]
        records: list[Mapping[str, Any]] = []
        for record in tick.records:
            tick.positions.append(len(records))
            if record is not None:
                records.append(record)
        tick.send = asyncio.ensure_future(self._send(records, timeout))
        tick.send.add_done_callback(_retrieve)
        tick.started.set()

    async def _send(
        self, records: list[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[AsyncFuture], set[int]]:
        futures, failed = await self._send_many(records, timeout)
        return futures, {id(future) for future in failed}

    def _cancelled(self, tick: _Tick, index: int) -> None:
        tick.waiting -= 1
        if tick.send is None:
            tick.records[index] = None  # not sent: it never will be
        elif tick.waiting == 0 and not tick.send.done():
            tick.send.cancel()  # nobody waits for it: its unsent records fail, as one's would


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark the send's outcome seen: every waiter may have been cancelled."""
    if not task.cancelled():
        task.exception()
