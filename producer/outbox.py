"""What producers send: records with their deadlines and sequence numbers, script arguments,
and applying the writer's answers, or failing records it did not answer in time.

Shared by the sync and the asyncio producer, which differ only in how they wait.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic

from lancequeue.common.columns import encode_fields
from lancequeue.common.errors import (
    LancequeueError,
    OutcomeUnknown,
    RecordRejected,
    WriteFailed,
    WriteTimeout,
)
from lancequeue.common.keys import TableKeys
from lancequeue.common.replies import decode_reply
from lancequeue.producer.entries import EntryMaker
from lancequeue.producer.outgoing import F, Fail, Outgoing
from lancequeue.producer.ranges import written_waiting
from lancequeue.producer.results import WriteResult

logger = logging.getLogger(__name__)


_COMPACT_SLACK = 1024  # expiry-heap entries of answered records tolerated before a rebuild


ABANDON_WITHIN_S = 1.0
"""How long after a record's deadline plus ``answer_grace_ms`` its abandonment may take: a
record Redis could not be asked about by then fails with ``OutcomeUnknown``. The slack of
"every future resolves by its deadline plus the grace"."""
ABANDON_ATTEMPT_S = 0.25
"""How long one abandon call may wait for Redis before it is tried again (with the records due
meanwhile), so that no record waits for another's slow try past its own slack."""
ABANDON_RETRY_PAUSE_S = 0.05
"""Pause before trying again to abandon records after a failed try."""
ABANDON_CHUNK = 1000
"""Most records abandoned in one script call."""

REPLY_INFLIGHT_TTL_MS = 600_000
"""Expiry of a producer's in-flight reply list, set each time a message is moved into it: a
producer that died holding a message there leaves nothing behind for long."""


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
        self.entries = EntryMaker(self.keys, self.reply_key, pack_records)
        """How records become stream entries, by what the writer publishes."""
        self._next_seq = 1
        self._unconfirmed: set[int] = set()
        """Numbered records Redis has not confirmed in the stream (few: those being sent, and
        those whose send went unanswered); some may have been settled since."""
        self._lock = threading.Lock()
        self._waiting: dict[int, Outgoing[F]] = {}
        self._expiry: list[tuple[float, int]] = []  # heap of (deadline, seq) of _waiting
        self._retry: list[int] = []  # seqs whose abandonment failed, to try again
        self._retry_at = 0.0
        self.on_sooner_due: Callable[[], None] | None = None
        """Called when a record numbered now is due to be abandoned before any other (so the
        driver's abandoning loop wakes for it)."""

    def __len__(self) -> int:
        return len(self._waiting)

    def register(
        self,
        records: Iterable[Mapping[str, Any]],
        make_future: Callable[[], F],
        deadline: float,
        timeout_s: float,
        delete: bool = False,
    ) -> tuple[list[F], list[Outgoing[F]], list[tuple[F, LancequeueError]]]:
        """Give each record (with ``delete``, each key of a delete) a future and encode it.

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
                encoded = encode_fields(record)
            except RecordRejected as exc:
                rejected.append((future, exc))
                continue
            if encoded.size > self._max_record_bytes:
                rejected.append((future, self._too_large(encoded.size)))
                continue
            if delete and not encoded.names:
                rejected.append((future, RecordRejected("a delete's key names no column")))
                continue
            outgoing.append(Outgoing(encoded, future, deadline, timeout_s, delete=delete))
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
            earliest = self._expiry[0][0] if self._expiry else math.inf
            for item in chunk:
                if item.seq == 0:
                    item.seq, self._next_seq = self._next_seq, self._next_seq + 1
                    item.epoch = self.entries.epoch
                    self._waiting[item.seq] = item
                    self._unconfirmed.add(item.seq)
                    heapq.heappush(self._expiry, (item.deadline, item.seq))
            if len(self._expiry) > 2 * len(self._waiting) + _COMPACT_SLACK:
                self._expiry = [(item.deadline, seq) for seq, item in self._waiting.items()]
                heapq.heapify(self._expiry)
            sooner = bool(self._expiry) and self._expiry[0][0] < earliest
        if sooner and self.on_sooner_due is not None:
            self.on_sooner_due()

    def confirm(self, items: Iterable[Outgoing[F]]) -> None:
        """Redis confirmed these records are in the stream."""
        with self._lock:
            for item in items:
                item.confirmed = True
                self._unconfirmed.discard(item.seq)

    def forget(self, items: Iterable[Outgoing[F]]) -> None:
        """Stop waiting for answers to records that were numbered but never sent. When they are
        the last numbered (they are: a send gives up while it holds the send lock), their
        numbers are handed out again, so that sends that never reach Redis (a long outage, a
        queue full for long) make no gap in the producer's numbers (a gap past
        ``SEQ_JUMP_LIMIT`` would get its later records ignored)."""
        with self._lock:
            seqs = sorted(item.seq for item in items if item.seq)
            for seq in seqs:
                self._waiting.pop(seq, None)
                self._unconfirmed.discard(seq)
            if (
                seqs
                and seqs[-1] == self._next_seq - 1
                and seqs == list(range(seqs[0], seqs[-1] + 1))
            ):
                self._next_seq = seqs[0]
                # Their deadlines must not be taken for those of the records numbered next.
                self._expiry = [(d, seq) for d, seq in self._expiry if seq < seqs[0]]
                heapq.heapify(self._expiry)

    def futures(self) -> list[F]:
        with self._lock:
            return [item.future for item in self._waiting.values()]

    def take_all(self) -> list[F]:
        with self._lock:
            futures = [item.future for item in self._waiting.values()]
            self._waiting.clear()
            self._expiry.clear()
            self._unconfirmed.clear()
        return futures

    def settle(
        self, message: bytes | str, ok: Callable[[F, WriteResult], None], fail: Fail[F]
    ) -> None:
        """Resolve the futures of the records one reply message answers; unknown sequence
        numbers are ignored, a malformed message is logged and dropped.

        An ok answer counts only with this record's digest: another client's record written
        under this producer's id and sequence number fails this one (it was not written). The
        writer answers a producer's records in sequence order and never writes one below a
        sequence number it has answered, so a record never confirmed in the stream and below
        one answered now never will be written."""
        try:
            reply = decode_reply(message)
        except ValueError as exc:
            logger.error("malformed reply on %s: %s", self.reply_key, exc)
            return
        resolved: list[tuple[Outgoing[F], LancequeueError | None]] = []
        with self._lock:
            waiting = self._waiting
            for seq, digest in written_waiting(waiting, reply.written):
                if seq in waiting:
                    written = waiting.pop(seq)
                    ok_or_not = None if digest in written.digests else _conflict(seq)
                    resolved.append((written, ok_or_not))
            for seq, error in reply.errors:
                failed = waiting.get(seq)
                if failed is None or (_is_duplicate(error) and failed.maybe_sent):
                    # A duplicate: an earlier copy of this very record may have been written,
                    # its answer lost: not known, so not settled by this answer.
                    continue
                del waiting[seq]
                resolved.append((failed, error))
            highest = reply.highest
            if highest is not None and self._unconfirmed:
                for seq in [seq for seq in self._unconfirmed if seq < highest]:
                    self._unconfirmed.discard(seq)
                    unsent = self._waiting.pop(seq, None)
                    if unsent is not None:
                        resolved.append((unsent, self._never_added()))
        result = WriteResult(reply.version)  # one for the message's records: the same commit
        for item, outcome in resolved:
            if outcome is None:
                ok(item.future, result)
            else:
                fail(item.future, outcome)

    def _never_added(self) -> WriteTimeout:
        return WriteTimeout(
            f"Redis never confirmed sending this record to {self.keys.table!r} before its "
            "deadline, and the writer has answered records sent after it: it is not in the "
            "stream, was not written and never will be"
        )

    def settle_all(
        self, messages: Iterable[bytes | str], ok: Callable[[F, WriteResult], None], fail: Fail[F]
    ) -> None:
        """``settle`` each message, in order (the in-flight list's leftovers: some may have
        been settled already, whose sequence numbers are then unknown and ignored)."""
        for message in messages:
            self.settle(message, ok, fail)

    # -- abandoning records the writer did not answer by their deadline ----------------------

    def to_abandon(self, now: float) -> tuple[list[int], float | None]:
        """What the abandoning loop does next: the sequence numbers to abandon now (records
        unanswered at their deadline plus the answer grace, and those whose last try failed),
        or none and how long to wait first (None: until a record is numbered)."""
        with self._lock:
            due: list[int] = []
            while self._expiry and self._expiry[0][0] + self._answer_grace_s <= now:
                _, seq = heapq.heappop(self._expiry)
                if seq in self._waiting:
                    due.append(seq)
            if self._retry and (due or now >= self._retry_at):
                # Records whose last try failed go with any new ones (pacing the tries only
                # while nothing new is due), so none waits past its slack behind the others.
                due = [seq for seq in self._retry if seq in self._waiting] + due
                self._retry = []
            if due:
                return due, None
            self._drop_settled_expiries()
            waits = [self._expiry[0][0] + self._answer_grace_s - now] if self._expiry else []
            if self._retry:
                waits.append(self._retry_at - now)
            return [], max(0.0, min(waits)) if waits else None

    @property
    def abandon_keys(self) -> list[str]:
        """KEYS of ``ABANDON_SCRIPT`` for this producer."""
        return [
            self.keys.seen(self.producer_id),
            self.keys.claim(self.producer_id),
            self.keys.abandoned(self.producer_id),
            self.keys.epoch,
        ]

    def abandon_calls(self, seqs: list[int]) -> list[tuple[list[int], list[int | str]]]:
        """The ``ABANDON_SCRIPT`` calls for ``seqs``: each its sequence numbers and ARGV, at
        most ``ABANDON_CHUNK`` records sent under one epoch a call."""
        by_epoch: dict[str, list[int]] = {}
        with self._lock:
            for seq in seqs:
                item = self._waiting.get(seq)
                if item is not None:
                    by_epoch.setdefault(item.epoch, []).append(seq)
        calls: list[tuple[list[int], list[int | str]]] = []
        for epoch, group in by_epoch.items():
            for start in range(0, len(group), ABANDON_CHUNK):
                chunk = group[start : start + ABANDON_CHUNK]
                calls.append((chunk, [epoch, *chunk]))
        return calls

    def abandoned(
        self, seqs: list[int], abandoned: int | Iterable[bytes | str | int], fail: Fail[F]
    ) -> None:
        """Apply the abandon script's reply: the records it abandoned fail with
        ``WriteTimeout`` (never written); the others were claimed by a writer, whose answer
        they now wait for, however late."""
        if isinstance(abandoned, int):  # -1: the stream's epoch changed
            why = "Redis lost its data since it was sent (the stream's epoch changed)"
            self._fail_unknown(seqs, why, None, fail)
            return
        gone = {int(seq) for seq in abandoned}
        failed: list[Outgoing[F]] = []
        with self._lock:
            for seq in seqs:
                item = self._waiting.get(seq)
                if item is None:
                    continue  # answered meanwhile
                if seq in gone:
                    del self._waiting[seq]
                    failed.append(item)
                else:
                    item.claimed = True
        for item in failed:
            fail(
                item.future,
                WriteTimeout(
                    f"the writer of {self.keys.table!r} did not answer by the record's "
                    f"deadline + answer_grace_ms ({self._answer_grace_s * 1000:.0f} ms), and "
                    "the producer abandoned it before any writer claimed it: it was not "
                    "written, and a writer will not write it now"
                ),
            )

    def unreachable(self, seqs: list[int], cause: BaseException, now: float, fail: Fail[F]) -> None:
        """An abandon call for ``seqs`` failed (Redis unreachable or refusing). The records whose
        slack is up before another try could end (``ABANDON_WITHIN_S`` after their deadline
        plus the grace) fail with ``OutcomeUnknown``: a writer may have claimed them before
        Redis became unreachable. The others are tried again (``to_abandon``)."""
        unknown: list[Outgoing[F]] = []
        with self._lock:
            for seq in seqs:
                item = self._waiting.get(seq)
                if item is None:
                    continue  # answered meanwhile
                limit = item.deadline + self._answer_grace_s + ABANDON_WITHIN_S
                if now + ABANDON_ATTEMPT_S < limit:
                    self._retry.append(seq)
                else:
                    del self._waiting[seq]
                    unknown.append(item)
            # A Redis refusing connections fails at once: pace the tries.
            self._retry_at = now + ABANDON_RETRY_PAUSE_S
        self._fail_unknown_items(
            unknown,
            f"Redis could not be reached to abandon it ({type(cause).__name__}: {cause})",
            cause,
            fail,
        )

    def _fail_unknown(
        self, seqs: list[int], why: str, cause: BaseException | None, fail: Fail[F]
    ) -> None:
        with self._lock:
            items = [self._waiting.pop(seq) for seq in seqs if seq in self._waiting]
        self._fail_unknown_items(items, why, cause, fail)

    def _fail_unknown_items(
        self, items: list[Outgoing[F]], why: str, cause: BaseException | None, fail: Fail[F]
    ) -> None:
        for item in items:
            error = OutcomeUnknown(
                f"the record's deadline + answer_grace_ms passed with no answer from the writer "
                f"of {self.keys.table!r}, and {why}: it may or may not be in the table"
            )
            error.__cause__ = cause
            fail(item.future, error)

    def _drop_settled_expiries(self) -> None:
        while self._expiry and self._expiry[0][1] not in self._waiting:
            heapq.heappop(self._expiry)


def _conflict(seq: int) -> WriteFailed:
    return WriteFailed(
        "SequenceConflict",
        f"another client's record was written under this producer's id and sequence number "
        f"{seq}; this record was not written",
    )


def _is_duplicate(error: LancequeueError | None) -> bool:
    return isinstance(error, WriteFailed) and error.error_type == "Duplicate"
