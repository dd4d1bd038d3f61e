"""The thread-safe, synchronous producer: :class:`~lancequeue.producer.core.ProducerCore` run
on three background threads (sender, reply listener, abandoner)."""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.redis_client import is_cluster_url
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.futures import RecordFuture
from lancequeue.producer.outgoing import Outgoing
from lancequeue.producer.results import WriteResult
from lancequeue.producer.settings import ProducerSettings
from lancequeue.producer.threads import Threads

logger = logging.getLogger(__name__)

Future = concurrent.futures.Future


class Producer:
    """Sends records to a table's writer through Redis; thread-safe.

    ``enqueue`` returns a future that resolves to ``None`` once the record's batch is in the
    table, or raises why it is not (``RecordRejected``, ``WriteFailed``, ``WriteTimeout``, ...)::

        with Producer("docs") as producer:
            producer.write({"id": 1, "text": "hello", "vector": vector})

    ``enqueue`` encodes the record, puts it in a bounded buffer (``max_buffered_records``) and
    returns at once; a background thread sends what has accumulated while its previous send was
    in flight. Only a full buffer makes ``enqueue`` wait: the queue in Redis is full (the
    cross-process bound, ``max_queue_size``) or Redis is unreachable.

    Each record has a deadline: the enqueue call's time plus its timeout. The producer rides out
    Redis restarts and lost connections until then, sending again what Redis did not confirm.
    A record the writer has not answered by the deadline plus ``answer_grace_ms`` is abandoned in
    Redis and fails with ``WriteTimeout`` (never written), unless a writer claimed it first: its
    future then waits for that writer's answer. If Redis cannot be asked within a second, it
    fails with ``OutcomeUnknown``. Futures cannot be cancelled: a record that was sent is written
    or answered regardless. A record still buffered when the process dies was never confirmed.
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        core: ProducerCore[Future[WriteResult]] = ProducerCore(
            self.settings, _resolve_ok, _resolve_error
        )
        self._core = core
        self.keys = core.keys
        self.producer_id = core.outbox.producer_id
        url = resolve_redis_url(self.settings.redis_url, self.settings.data_dir)
        self._threads = Threads(
            core, url, is_cluster_url(url), self.settings.redis_timeout_ms / 1000
        )
        # Only now is there something to close (a failure above leaves nothing running).
        # close() waits for enqueues in progress; re-entrant, for a close() from a signal
        # handler that interrupted an enqueue of this very thread while it held the lock.
        self._lifecycle = threading.Condition()
        self._closed = False
        self._close_done = threading.Event()
        self._enqueuing = 0
        # Buffered records go before the interpreter exits, even without close().
        self._close_at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._close_at_exit)

    # -- public API --------------------------------------------------------------------------

    def enqueue(
        self, record: Mapping[str, Any], timeout: float | None = None
    ) -> Future[WriteResult]:
        """Buffer one record for sending; return a future resolved once it is in the table
        (to a ``WriteResult`` naming the table version that holds it).

        Returns at once unless the send buffer is full, then waits for room until the record's
        deadline (now plus ``timeout`` seconds, default ``timeout_ms``), raising ``QueueFull``
        (the table's queue stayed full) or ``WriteTimeout`` (Redis stayed unreachable) if it got
        none: the record was not written. Raises ``RecordRejected`` at once for a record that
        cannot be encoded or is over ``max_record_bytes`` encoded, and ``ProducerClosed`` after
        ``close()``. Errors of sending later (the deadline passed before Redis took it) go to the
        future; so does the writer's answer.
        """
        futures, failed_here = self._enqueue([record], timeout)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[Future[WriteResult]]:
        """Buffer records in order; one future per record. Waits only for room in the buffer.

        Errors go to the futures: ``RecordRejected`` for a record that cannot be encoded or is
        over ``max_record_bytes`` (never sent), ``QueueFull`` or ``WriteTimeout`` for records
        that could not be sent by their deadline (now plus ``timeout``); the others go.
        """
        futures, _ = self._enqueue(records, timeout)
        return futures

    def enqueue_delete(
        self, key: Mapping[str, Any], timeout: float | None = None
    ) -> Future[WriteResult]:
        """Buffer a delete of the rows whose key columns hold ``key``'s values (a map of the
        table's key columns, ``--upsert-key`` or ``--delete-key``); return a future resolved
        once they are gone. Applied in stream order with this table's records around it; waits,
        raises and fails as ``enqueue`` does (a key that is not the table's is rejected)."""
        futures, failed_here = self._enqueue([key], timeout, delete=True)
        if failed_here:
            raise failed_here[0].exception()  # type: ignore[misc]
        return futures[0]

    def delete(self, key: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        """Delete the rows of ``key`` and wait until they are gone (or raise why not)."""
        self._may_wait()
        return self._wait([self.enqueue_delete(key, timeout)])[0]

    def write(self, record: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        """Send one record and wait until it is in the table (or raise why it is not); its
        ``WriteResult`` says in which table version."""
        return self.write_many([record], timeout)[0]

    def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[WriteResult]:
        """Send records together and wait for all of them; their ``WriteResult``, in order.

        Raises the error of the first record that did not land once every record is answered;
        that takes ``timeout`` plus ``answer_grace_ms`` at most (plus a second if Redis hangs),
        unless a writer claimed a record and its commit takes longer: then its answer is awaited.
        """
        self._may_wait()
        return self._wait(self.enqueue_many(records, timeout))

    def _may_wait(self) -> None:
        """Raise before anything is sent if this thread is one of the producer's own."""
        if self._threads.ours():
            raise LancequeueError(
                "write() in a future's done-callback would wait for answers only the thread "
                "running that callback can deliver; use enqueue() there"
            )

    @staticmethod
    def _wait(futures: list[Future[WriteResult]]) -> list[WriteResult]:
        """Wait for every future, then raise the first one's error; else their results."""
        concurrent.futures.wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def close(self, timeout: float | None = None) -> None:
        """Send what is buffered, wait (bounded by ``timeout``, default ``close_timeout_ms``) for
        outstanding records to be answered, then stop; later enqueues raise ``ProducerClosed``.
        Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        records that cannot be sent at once (queue full, Redis unreachable) and enqueues
        waiting for room get ``ProducerClosed`` and are not written.
        """
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        core = self._core
        here = threading.current_thread()
        ours = self._threads.ours()
        with self._lifecycle:
            if self._closed:  # another close() is at work: it is done when it returns
                if not ours:
                    self._close_done.wait()
                return
            self._closed = True
            core.close_deadline = deadline
            core.closing = True
            self._threads.notify()  # enqueues waiting for room give up
            self._lifecycle.wait_for(lambda: self._enqueuing == 0, wait_s)
        try:
            self._close(deadline, here, ours)
        finally:
            self._close_done.set()

    def _close(self, deadline: float, here: threading.Thread, ours: bool) -> None:
        core = self._core
        atexit.unregister(self._close_at_exit)
        sender = self._threads.sender
        if here is sender:  # close() in a done-callback: the sender cannot wait for itself
            core.refuse_late(core.buffer.take_all())
        else:  # it sends what is buffered, or gives up once close()'s time is up
            sender.join(max(0.0, deadline - time.monotonic()) + self._room_recheck_s)
            if sender.is_alive():  # held up in a call: what it has not taken fails now
                core.refuse_late(core.buffer.take_all())
        if not ours:  # else the thread that would answer them is the one waiting
            concurrent.futures.wait(core.outbox.futures(), max(0.0, deadline - time.monotonic()))
        core.stopping = True
        self._threads.stop()
        core.fail_unanswered()
        self._threads.shut()

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered by the writer (buffered ones included)."""
        return self._core.outstanding

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

    # -- enqueueing --------------------------------------------------------------------------

    def _enqueue(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None, delete: bool = False
    ) -> tuple[list[Future[WriteResult]], list[Future[WriteResult]]]:
        """Encode and buffer; returns all futures and those failed here."""
        with self._lifecycle:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            self._enqueuing += 1
        try:
            futures, outgoing = self._core.register(records, RecordFuture, timeout, delete)
            failed = [future for future in futures if future.done()]  # RecordRejected
            late = self._put(outgoing)
            if late:
                self._core.refuse_late(late)
                failed.extend(item.future for item in late)
            return futures, failed
        finally:
            with self._lifecycle:
                self._enqueuing -= 1
                if self._closed:  # close() waits for the last one
                    self._lifecycle.notify_all()

    def _put(
        self, items: list[Outgoing[Future[WriteResult]]]
    ) -> list[Outgoing[Future[WriteResult]]]:
        """Buffer ``items``, waiting for room until each one's deadline; returns those that
        got none (or came after close()). The producer's own threads (a done-callback) never
        wait: the sender makes room, and the others must not stall answers meanwhile."""
        buffer = self._core.buffer
        ours = self._threads.ours()
        rest = items[buffer.put(items, over_bound=ours) :]
        try:
            with self._threads.changed:
                while rest:
                    rest = rest[buffer.put(rest) :]
                    if not rest or self._closed:
                        break
                    left_s = rest[0].deadline - time.monotonic()
                    if left_s <= 0:
                        break
                    self._threads.changed.wait(left_s)
        except BaseException as exc:  # an interrupt: what found no room is never sent
            self._core.fail_unsent(rest, exc)
            raise
        return rest

    # -- running the core's loops ------------------------------------------------------------

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000


def _close_at_exit(producer: weakref.ref[Producer]) -> None:
    alive = producer()
    if alive is not None:
        alive.close()


def _resolve_ok(future: Future[WriteResult], result: WriteResult) -> None:
    _settle(future.set_result, result)


def _resolve_error(future: Future[WriteResult], error: LancequeueError) -> None:
    _settle(future.set_exception, error)


def _settle(settle: Callable[[Any], None], outcome: Any) -> None:
    """Settle a future; a done-callback raising even ``SystemExit`` must not leave the other
    records of the batch unsettled (``Future`` itself logs only ``Exception``)."""
    try:
        settle(outcome)
    except concurrent.futures.InvalidStateError:  # close() raced the answer
        pass
    except BaseException:
        logger.exception("a done-callback of a record's future raised")
