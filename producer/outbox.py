"""What producers send: sequence numbers, script arguments, and applying the writer's answers.

Shared by the sync and the asyncio producer, which differ only in how they wait.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import (
    LancequeueError,
    ProducerClosed,
    QueueFull,
    RecordRejected,
    RedisUnavailable,
)
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    DEFAULT_MAX_QUEUE_SIZE,
    ENTRY_WIDTH,
    decode_results,
    entry_fields,
)

logger = logging.getLogger(__name__)

F = TypeVar("F")
Item = tuple[int, bytes, F]
"""A record to send: its sequence number, its encoded bytes, its future."""


class Outbox(Generic[F]):
    """Records sent by one producer instance and not yet answered, keyed by sequence number."""

    def __init__(self, table: str) -> None:
        self.keys = TableKeys(table)
        self.producer_id = uuid.uuid4().hex
        """This producer instance's identity: its reply key is derived from it."""
        self.reply_key = self.keys.reply(self.producer_id)
        self._seqs = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, F] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def register(
        self, records: Iterable[Mapping[str, Any]], make_future: Callable[[], F]
    ) -> tuple[list[F], list[Item[F]], list[tuple[F, LancequeueError]]]:
        """Give each record a future; encode it and give it a sequence number.

        Returns the futures in record order, the items to send, and the futures of records
        that could not be encoded with their ``RecordRejected`` (to be failed by the caller;
        the other records still go).
        """
        futures: list[F] = []
        encoded: list[tuple[bytes, F]] = []
        rejected: list[tuple[F, LancequeueError]] = []
        for record in records:
            future = make_future()
            futures.append(future)
            try:
                encoded.append((encode_record(record), future))
            except RecordRejected as exc:
                rejected.append((future, exc))
        with self._lock:
            items = [(next(self._seqs), data, future) for data, future in encoded]
            for seq, _, future in items:
                self._waiting[seq] = future
        return futures, items, rejected

    def script_args(self, items: list[Item[F]]) -> list[bytes | str | int]:
        """ARGV of the enqueue script for ``items``."""
        args: list[bytes | str | int] = [DEFAULT_MAX_QUEUE_SIZE, ENTRY_WIDTH]
        for seq, data, _ in items:
            args.extend(entry_fields(self.reply_key, seq, data))
        return args

    @property
    def script_keys(self) -> list[str]:
        return [self.keys.stream, self.keys.config]

    def take(self, seq: int) -> F | None:
        with self._lock:
            return self._waiting.pop(seq, None)

    def take_all(self) -> list[F]:
        with self._lock:
            futures = list(self._waiting.values())
            self._waiting.clear()
        return futures

    def abandon(
        self,
        items: list[Item[F]],
        error: LancequeueError,
        fail: Callable[[F, LancequeueError], None],
    ) -> list[F]:
        """Forget records that were not sent and fail their futures (those not resolved by
        someone else meanwhile). Returns the futures failed here."""
        failed = []
        for seq, _, _ in items:
            future = self.take(seq)
            if future is not None:
                fail(future, error)
                failed.append(future)
        return failed

    def give_up_waiting(
        self, closed: bool, deadline: float, timeout_s: float
    ) -> LancequeueError | None:
        """Why an enqueue waiting for room in a full queue must stop waiting, if it must."""
        if closed:
            return ProducerClosed("closed while waiting for room")
        if time.monotonic() >= deadline:
            return QueueFull(f"table {self.keys.table!r}: queue full for {timeout_s}s")
        return None

    def futures(self) -> list[F]:
        with self._lock:
            return list(self._waiting.values())

    def settle(
        self,
        message: bytes | str,
        ok: Callable[[F], None],
        fail: Callable[[F, LancequeueError], None],
    ) -> None:
        """Resolve the futures of the records one reply message answers; unknown sequence
        numbers are ignored, a malformed message is logged and dropped."""
        try:
            results = decode_results(message)
        except ValueError as exc:
            logger.error("malformed reply on %s: %s", self.reply_key, exc)
            return
        for result in results:
            future = self.take(result.seq)
            if future is None:
                continue
            if result.error is None:
                ok(future)
            else:
                fail(future, result.error)


def not_sent_error(exc: BaseException) -> LancequeueError:
    """What the futures of records that could not be sent because of ``exc`` fail with."""
    if isinstance(exc, LancequeueError):
        return exc
    if isinstance(exc, RedisError):
        return RedisUnavailable(f"record not sent: {type(exc).__name__}: {exc}")
    return LancequeueError(f"record not sent: {type(exc).__name__}: {exc}")
