"""What producers send: records with their deadlines and sequence numbers, script arguments,
and applying the writer's answers, or failing records it did not answer in time.

Shared by the sync and the asyncio producer, which differ only in how they wait.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import LancequeueError, RecordRejected, WriteTimeout
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    DEFAULT_MAX_QUEUE_SIZE,
    ENTRY_WIDTH,
    PACKED_ENTRY_WIDTH,
    decode_results,
    entry_fields,
    packed_entry_fields,
)

logger = logging.getLogger(__name__)

F = TypeVar("F")
Fail = Callable[[F, LancequeueError], None]
"""Fails a future with an error (a no-op if it is resolved already)."""

_COMPACT_SLACK = 1024  # expiry-heap entries of answered records tolerated before a rebuild

PACK_LIMIT_REFRESH_S = 5.0
"""How often a producer re-reads the writer's ``max_batch``, the most records it packs into
one entry."""

REPLY_INFLIGHT_TTL_MS = 600_000
"""Expiry of a producer's in-flight reply list, set each time a message is moved into it: a
producer that died holding a message there leaves nothing behind for long."""


@dataclass(eq=False)
class Outgoing(Generic[F]):
    """One record on its way: encoded, with its future and deadline."""

    data: bytes
    """The encoded record; emptied once Redis confirmed it is in the stream."""
    future: F
    deadline: float
    """``time.monotonic()`` of the enqueue call plus its timeout."""
    seq: int = 0
    """Its sequence number, given when it is first sent (0 until then)."""
    maybe_sent: bool = False
    """A send of it got no answer from Redis: it may be in the stream. It then fails only by
    the writer's answer or, lacking one, at its deadline plus the answer grace."""


class Outbox(Generic[F]):
    """Records of one producer instance sent and not yet answered, keyed by sequence number."""

    def __init__(
        self, table: str, answer_grace_s: float, max_record_bytes: int, pack_records: int = 1
    ) -> None:
        self.keys = TableKeys(table)
        self.producer_id = uuid.uuid4().hex
        """This producer instance's identity: its reply key is derived from it."""
        self.reply_key = self.keys.reply(self.producer_id)
        self.inflight_key = self.keys.reply_inflight(self.producer_id)
        """Where the reply listener moves each reply message until it has settled it, so that
        a connection lost after the pop loses no message."""
        self._answer_grace_s = answer_grace_s
        self._max_record_bytes = max_record_bytes
        self._pack_records = pack_records
        self._pack_limit = pack_records
        self._pack_limit_learned_at: float | None = None
        self._seqs = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, Outgoing[F]] = {}
        self._expiry: list[tuple[float, int]] = []  # heap of (deadline, seq) of _waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def register(
        self, records: Iterable[Mapping[str, Any]], make_future: Callable[[], F], deadline: float
    ) -> tuple[list[F], list[Outgoing[F]], list[tuple[F, LancequeueError]]]:
        """Give each record a future and encode it.

        Returns the futures in record order, the records to send, and the futures of records
        that could not be encoded or are over ``max_record_bytes`` encoded, with their
        ``RecordRejected`` (to be failed by the caller; they are never sent, the other records
        still go). Sequence numbers come later, from ``number``.
        """
        futures: list[F] = []
        outgoing: list[Outgoing[F]] = []
        rejected: list[tuple[F, LancequeueError]] = []
        for record in records:
            future = make_future()
            futures.append(future)
            try:
                data = encode_record(record)
            except RecordRejected as exc:
                rejected.append((future, exc))
                continue
            if len(data) > self._max_record_bytes:
                rejected.append((future, self._too_large(len(data))))
                continue
            outgoing.append(Outgoing(data, future, deadline))
        return futures, outgoing, rejected

    def _too_large(self, size: int) -> RecordRejected:
        return RecordRejected(
            f"record is {size} bytes encoded, over the producer's max_record_bytes "
            f"({self._max_record_bytes}); it was not sent"
        )

    def number(self, chunk: list[Outgoing[F]]) -> None:
        """Give the records of ``chunk`` that have none their sequence numbers, now that they
        are sent (the caller sends one chunk at a time, so numbers follow stream order), and
        wait for their answers."""
        with self._lock:
            for item in chunk:
                if item.seq == 0:
                    item.seq = next(self._seqs)
                    self._waiting[item.seq] = item
                    heapq.heappush(self._expiry, (item.deadline, item.seq))
            if len(self._expiry) > 2 * len(self._waiting) + _COMPACT_SLACK:
                self._expiry = [(item.deadline, seq) for seq, item in self._waiting.items()]
                heapq.heapify(self._expiry)

    def pack(self, chunk: list[Outgoing[F]]) -> list[int]:
        """How ``chunk`` (numbered) is split into stream entries: the number of records of each,
        in order. An entry takes up to ``pack_records`` records (and no more than the writer's
        ``max_batch``: a packed entry is never split across batches) with consecutive sequence
        numbers; with ``pack_records`` 1, every record is an entry of its own."""
        sizes: list[int] = []
        previous = -1
        for item in chunk:
            if sizes and sizes[-1] < self._pack_limit and item.seq == previous + 1:
                sizes[-1] += 1
            else:
                sizes.append(1)
            previous = item.seq
        return sizes

    def script_args(
        self, chunk: list[Outgoing[F]], sizes: list[int], ttl_ms: int
    ) -> list[bytes | str | int]:
        """ARGV of the enqueue script for ``chunk`` (numbered) split into entries of ``sizes``
        records (see ``pack``), each entry with ``ttl_ms``."""
        if self._pack_records == 1:
            args: list[bytes | str | int] = [DEFAULT_MAX_QUEUE_SIZE, ENTRY_WIDTH]
            for item in chunk:
                args.extend(entry_fields(self.reply_key, item.seq, item.data, ttl_ms))
            return args
        args = [DEFAULT_MAX_QUEUE_SIZE, PACKED_ENTRY_WIDTH]
        start = 0
        for size in sizes:
            items = chunk[start : start + size]
            data = [item.data for item in items]
            args.extend(packed_entry_fields(self.reply_key, items[0].seq, data, ttl_ms))
            start += size
        return args

    def pack_limit_stale(self, now: float) -> bool:
        """Whether to (re)read the writer's ``max_batch`` before packing: never read yet, or
        last read ``PACK_LIMIT_REFRESH_S`` ago (a new writer may have another)."""
        if self._pack_records == 1:
            return False
        learned_at = self._pack_limit_learned_at
        return learned_at is None or now - learned_at >= PACK_LIMIT_REFRESH_S

    def learn_writer_max_batch(self, raw: bytes | str | None, now: float) -> None:
        """Pack no more records per entry than the writer's ``max_batch`` (the config hash's
        field). Until a writer has published one, do not pack: it also says the writer reads
        packed entries."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        limit = int(text) if text is not None and text.isdigit() and int(text) > 0 else 1
        self._pack_limit = min(self._pack_records, limit)
        self._pack_limit_learned_at = now

    @property
    def script_keys(self) -> list[str]:
        return [self.keys.stream, self.keys.config]

    def forget(self, items: Iterable[Outgoing[F]]) -> None:
        """Stop waiting for answers to records that were numbered but never sent."""
        with self._lock:
            for item in items:
                self._waiting.pop(item.seq, None)

    def futures(self) -> list[F]:
        with self._lock:
            return [item.future for item in self._waiting.values()]

    def take_all(self) -> list[F]:
        with self._lock:
            futures = [item.future for item in self._waiting.values()]
            self._waiting.clear()
            self._expiry.clear()
        return futures

    def settle(self, message: bytes | str, ok: Callable[[F], None], fail: Fail[F]) -> None:
        """Resolve the futures of the records one reply message answers; unknown sequence
        numbers are ignored, a malformed message is logged and dropped."""
        try:
            results = decode_results(message)
        except ValueError as exc:
            logger.error("malformed reply on %s: %s", self.reply_key, exc)
            return
        for result in results:
            with self._lock:
                item = self._waiting.pop(result.seq, None)
            if item is None:
                continue
            if result.error is None:
                ok(item.future)
            else:
                fail(item.future, result.error)

    def settle_all(
        self, messages: Iterable[bytes | str], ok: Callable[[F], None], fail: Fail[F]
    ) -> None:
        """``settle`` each message, in order (the in-flight list's leftovers: some may have
        been settled already, whose sequence numbers are then unknown and ignored)."""
        for message in messages:
            self.settle(message, ok, fail)

    def expire(self, now: float, fail: Fail[F]) -> None:
        """Fail, with ``WriteTimeout``, the records still unanswered at their deadline plus the
        answer grace. Cheap when none is due: the reply listener calls it each time it wakes."""
        due: list[Outgoing[F]] = []
        with self._lock:
            while self._expiry and self._expiry[0][0] + self._answer_grace_s <= now:
                _, seq = heapq.heappop(self._expiry)
                item = self._waiting.pop(seq, None)
                if item is not None:
                    due.append(item)
        for item in due:
            fail(
                item.future,
                WriteTimeout(
                    f"the writer of {self.keys.table!r} did not answer by the record's deadline "
                    f"+ answer_grace_ms ({self._answer_grace_s * 1000:.0f} ms); a writer never "
                    "writes a record after its deadline, so it will not write this one"
                ),
            )
