"""The producer's send buffer: records encoded and waiting for the sender, in enqueue order.

``enqueue`` puts a record here and returns its future (as the in-process queue and Kafka's
producer do); the sender takes what has accumulated while its previous send was in flight, a
chunk at a time, so a lone record goes at once and a busy loop sends large chunks; while
records keep coming, at most one send per ``send_interval_s`` (unless a chunk's worth is in),
so records that trickle in share sends too. The buffer
is bounded (``max_buffered_records``): while the queue in Redis is full or Redis is
unreachable, the sender waits, the buffer fills, and ``enqueue`` waits for room.

No I/O and no waiting here: the drivers wait, woken by ``on_room`` and ``on_buffered``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic

from lancequeue.producer.outgoing import F, Outgoing


class SendBuffer(Generic[F]):
    """A bounded FIFO of encoded records; thread-safe."""

    def __init__(
        self,
        max_records: int,
        chunk_records: int,
        chunk_bytes: int,
        linger_s: float,
        send_interval_s: float = 0.0,
    ) -> None:
        self._max_records = max_records
        self._chunk_records = chunk_records
        self._chunk_bytes = chunk_bytes
        self._linger_s = linger_s
        self._send_interval_s = send_interval_s
        self._taken_at = -math.inf
        """When the sender last took a chunk (``time.monotonic()``)."""
        self._items: deque[Outgoing[F]] = deque()
        # The records that are due before every record buffered after them, in buffer order:
        # their deadlines rise, the first is the earliest of all (a sliding-window minimum,
        # so neither put nor take looks at more than the records it adds or removes).
        self._due_first: deque[Outgoing[F]] = deque()
        self._earliest = math.inf
        """The earliest deadline of the buffered records (inf: none): ``_due_first``'s first,
        set under the lock once a change is done, so that ``expired`` and ``due_in`` can read
        it without the lock and never see a change half made."""
        self._lock = threading.Lock()
        self.on_room: Callable[[], None] = _nothing
        """Called after records left the buffer (a put that found it full may succeed now)."""
        self.on_buffered: Callable[[], None] = _nothing
        """Called when the sender may have work: the buffer stopped being empty, or holds a
        chunk's worth (the end of a linger)."""
        self.on_sooner_due: Callable[[float], None] = _nothing_at
        """Called with a record's deadline when it is due before any other buffered (the
        abandoner fails buffered records at their deadline when the sender is held up)."""

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: list[Outgoing[F]], over_bound: bool = False) -> int:
        """Append records in order while there is room (all of them if ``over_bound``: the
        sender's own thread must never wait for room only it can make); returns how many."""
        with self._lock:
            was = len(self._items)
            room = len(items) if over_bound else max(0, self._max_records - was)
            placed = items if room >= len(items) else items[:room]
            self._items.extend(placed)
            now = len(self._items)
            before = self._earliest
            for item in placed:
                self._push_due(item)
            earliest = self._settle_earliest()
        if placed and (was == 0 or (was < self._chunk_records <= now)):
            self.on_buffered()
        if earliest < before:
            self.on_sooner_due(earliest)
        return len(placed)

    def take(self, now: float, linger: bool = True) -> tuple[list[Outgoing[F]], float | None]:
        """The next chunk to send: the oldest records sharing a timeout, at most
        ``chunk_records`` and ``chunk_bytes`` encoded (at least one record). Unless a chunk's
        worth is in (or ``linger`` is False: closing), the chunk is taken once its oldest record
        has waited ``linger_s`` and ``send_interval_s`` has passed since the last take: a record
        after a quiet spell goes at once, records that keep coming share sends. Returns
        ``([], wait_s)`` when there is nothing to take yet: ``wait_s`` is when to look again
        (None: once something is buffered)."""
        with self._lock:
            items = self._items
            if not items:
                return [], None
            if linger and len(items) < self._chunk_records:
                ready_at = max(
                    items[0].enqueued_at + self._linger_s, self._taken_at + self._send_interval_s
                )
                if ready_at > now:
                    return [], ready_at - now
            self._taken_at = now
            timeout_s = items[0].timeout_s
            chunk: list[Outgoing[F]] = []
            size = 0
            while items and len(chunk) < self._chunk_records:
                item = items[0]
                size += item.record.size
                if item.timeout_s != timeout_s or (size > self._chunk_bytes and chunk):
                    break
                chunk.append(items.popleft())
            due_first = self._due_first
            for item in chunk:  # the records taken leave the front of both
                if not due_first or due_first[0] is not item:
                    continue
                due_first.popleft()
            self._settle_earliest()
        self.on_room()
        return chunk, None

    def expired(self, now: float) -> list[Outgoing[F]]:
        """Take out the records whose deadline has passed (the sender is held up by an
        earlier send: they fail now, not when it is done)."""
        if self._earliest > now:
            return []
        with self._lock:
            gone = [item for item in self._items if item.deadline <= now]
            self._items = deque(item for item in self._items if item.deadline > now)
            self._due_first.clear()
            for item in self._items:
                self._push_due(item)
            self._settle_earliest()
        self.on_room()
        return gone

    def due_in(self, now: float) -> float | None:
        """Seconds until a buffered record's deadline (None: nothing buffered)."""
        earliest = self._earliest
        return None if earliest == math.inf else max(0.0, earliest - now)

    def take_all(self) -> list[Outgoing[F]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._due_first.clear()
            self._earliest = math.inf
        self.on_room()
        return items

    def _settle_earliest(self) -> float:
        """Publish ``_due_first``'s first deadline as ``_earliest`` (under the lock)."""
        due_first = self._due_first
        self._earliest = due_first[0].deadline if due_first else math.inf
        return self._earliest

    def _push_due(self, item: Outgoing[F]) -> None:
        """Append ``item`` (just buffered) to ``_due_first``, dropping the records it is due
        before: they are no longer due before every record after them."""
        due_first = self._due_first
        while due_first and due_first[-1].deadline >= item.deadline:
            due_first.pop()
        due_first.append(item)


def _nothing() -> None:
    pass


def _nothing_at(deadline: float) -> None:
    pass
