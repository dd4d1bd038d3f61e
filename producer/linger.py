"""The sync producer's accumulator: records enqueued within ``linger_ms`` of each other go to
Redis in one send, from a background thread (Kafka's ``linger.ms``).

Without it, every ``enqueue`` call runs the enqueue script in the calling thread: one Redis
round trip per call. A process that writes records one at a time then spends most of its CPU on
round trips, and every record is a stream entry of its own. With a linger, ``enqueue`` encodes
the record, buffers it and returns its future; the sender thread sends what the buffer holds
once the oldest record has waited ``linger_ms`` (or a chunk's worth is in, or the producer
closes), packed into entries like any ``enqueue_many``.

The buffer is bounded: an ``enqueue`` that finds it full waits for room (the sender is waiting
for room in the queue, or for Redis), until its deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic

from lancequeue.producer.outbox import F, Outgoing

logger = logging.getLogger(__name__)

SendGroup = Callable[[list[Outgoing[F]], float], None]
"""Sends records that share a timeout (seconds); their deadlines are set already."""


class Linger(Generic[F]):
    """A bounded buffer of encoded records and the thread that sends it."""

    def __init__(
        self,
        linger_s: float,
        send_records: int,
        max_records: int,
        send: SendGroup[F],
        name: str,
    ) -> None:
        self._linger_s = linger_s
        self._send_records = send_records
        self._max_records = max_records
        self._send = send
        self._changed = threading.Condition()
        self._buffer: deque[tuple[float, Outgoing[F]]] = deque()  # (timeout_s, record)
        self._oldest_at = 0.0  # time.monotonic() the oldest buffered record came in
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        """Records buffered (a send numbers the records it takes: they count as outstanding
        from then on)."""
        return len(self._buffer)

    @property
    def thread(self) -> threading.Thread:
        """The sender thread (done-callbacks of records it fails run on it)."""
        return self._thread

    def put(self, records: list[Outgoing[F]], timeout_s: float) -> list[Outgoing[F]]:
        """Buffer ``records`` in order, waiting for room until each one's deadline; returns
        those that found no room by then, or came after ``close()`` (never sent: the caller
        fails them). From the sender thread itself (a done-callback of a record it failed), it
        never waits: only that thread makes room."""
        may_wait = threading.current_thread() is not self._thread
        with self._changed:
            for position, record in enumerate(records):
                while may_wait and len(self._buffer) >= self._max_records and not self._closing:
                    left_s = record.deadline - time.monotonic()
                    if left_s <= 0:
                        return records[position:]
                    self._changed.wait(left_s)
                if self._closing:
                    return records[position:]
                if not self._buffer:
                    self._oldest_at = time.monotonic()
                self._buffer.append((timeout_s, record))
                if len(self._buffer) == 1 or len(self._buffer) == self._send_records:
                    self._changed.notify_all()
        return []

    def close(self) -> list[Outgoing[F]]:
        """Send what is buffered now, then stop the thread (returns once it has stopped); later
        ``put`` calls buffer nothing. From the sender thread itself (a done-callback), it cannot
        wait for itself: it takes what is still buffered and returns it, unsent, for the caller
        to fail."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            if threading.current_thread() is self._thread:
                left = [record for _, record in self._buffer]
                self._buffer.clear()
                return left
        self._thread.join()
        return []

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            timeout_s, records = group
            try:
                self._send(records, timeout_s)
            # Even SystemExit from a done-callback: the thread must go on sending (or failing)
            # what is buffered, or those records would never be answered.
            except BaseException:
                logger.exception("sending buffered records failed")

    def _next_group(self) -> tuple[float, list[Outgoing[F]]] | None:
        """Wait for the linger to pass (or a chunk's worth, or close), then take the oldest
        records that share a timeout; None once closed with nothing left."""
        with self._changed:
            while True:
                if not self._buffer:
                    if self._closing:
                        return None
                    self._changed.wait()
                    continue
                wait_s = self._oldest_at + self._linger_s - time.monotonic()
                if self._closing or wait_s <= 0 or len(self._buffer) >= self._send_records:
                    break
                self._changed.wait(wait_s)
            timeout_s = self._buffer[0][0]
            records: list[Outgoing[F]] = []
            while self._buffer and self._buffer[0][0] == timeout_s:
                records.append(self._buffer.popleft()[1])
            if self._buffer:  # records of another timeout, waiting already: no second linger
                self._oldest_at = 0.0
            self._changed.notify_all()  # room for waiting puts
            return timeout_s, records
