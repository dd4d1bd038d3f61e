"""The producers' core, free of I/O: its loops are driven here as the drivers drive them, with
Redis's answers written out by hand. What the core decides (what to send, when to wait, what a
record fails with) is checked once, for both drivers."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from lancequeue.common.codec import encode_record
from lancequeue.common.columns import encode_fields
from lancequeue.common.errors import LancequeueError, QueueFull, WriteTimeout
from lancequeue.common.protocol import (
    DIGEST_BYTES,
    ENTRY_WIDTH,
    FIELD_COLUMNS,
    FIELD_COUNT,
    FIELD_NONCE,
    FIELD_RECORD,
    FIELD_SEQ,
    FIELD_VERSION,
    HIGHEST_VERSION,
    NONCE_VERSION,
    NONCE_WIDTH,
    PACKED_ENTRY_WIDTH,
    PROTOCOL_VERSION,
    SHA256_VERSION,
)
from lancequeue.common.replies import encode_ranges, encode_results, record_digest
from lancequeue.producer.buffer import SendBuffer
from lancequeue.producer.calls import Call, Op, Steps
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.futures import RecordFuture
from lancequeue.producer.outgoing import Outgoing
from lancequeue.producer.results import WriteResult
from lancequeue.producer.sending import LEAST_CALL_WAIT_S
from lancequeue.producer.settings import ProducerSettings
from tests.support import WRITTEN, entry_records, record, wait_for

Future = concurrent.futures.Future[WriteResult]
EPOCH = b"0123456789abcdef0123456789abcdef"


def ok(future: Future, result: WriteResult) -> None:
    future.set_result(result)


def fail(future: Future, error: LancequeueError) -> None:
    if not future.done():  # as the drivers do: a sender closed may fail what was answered
        future.set_exception(error)


def core(**settings: Any) -> ProducerCore[Future]:
    return ProducerCore(ProducerSettings("docs", **settings), ok, fail)


CONFIG_READS = (Op.READ_CONFIG, Op.READ_EPOCH, Op.READ_WRITER)
LIVE_WRITER = [b"2000000000000", [b"1000000000", b"0"]]
"""``writer_until_ms`` far past Redis ``TIME``: a writer serves the table."""


class Loop:
    """Runs one of the core's loops call by call, as a driver would."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.call: Call | None = next(steps)

    def answer(self, result: Any = None) -> Call | None:
        try:
            self.call = self.steps.send(result)
        except StopIteration:
            self.call = None
        return self.call

    def fail_with(self, exc: BaseException) -> Call | None:
        try:
            self.call = self.steps.throw(exc)
        except StopIteration:
            self.call = None
        return self.call

    def connect(
        self, max_batch: bytes | None = b"128", protocol: bytes | None = HIGHEST_VERSION
    ) -> Call | None:
        """Answer the connection and the config reads that follow it (``columnar_batch`` and
        ``protocol`` of the config hash, the epoch, and once a live writer)."""
        assert self.call is not None and self.call.op is Op.CONNECT
        self.answer()
        while self.call is not None and self.call.op in CONFIG_READS:
            if self.call.op is Op.READ_CONFIG:
                self.answer([max_batch, protocol])
            elif self.call.op is Op.READ_WRITER:
                self.answer(LIVE_WRITER)
            else:
                self.answer(EPOCH)
        return self.call


def _sent_entries(call: Call) -> list[dict[bytes, Any]]:
    """The entries an ENQUEUE call carries, each a map of its fields, in order."""
    width = call.args[0][1]
    assert width in (ENTRY_WIDTH, PACKED_ENTRY_WIDTH, PACKED_ENTRY_WIDTH + NONCE_WIDTH)
    fields = call.args[0][3:]
    entries = [fields[start : start + width] for start in range(0, len(fields), width)]
    return [dict(zip(entry[::2], entry[1::2], strict=True)) for entry in entries]


def sent_records(call: Call) -> list[bytes]:
    """The encoded records an ENQUEUE call carries, in order (in columnar entries or not)."""
    return [data for fields in _sent_entries(call) for data in entry_records(fields)]


def sent_digests(call: Call) -> list[bytes]:
    """The digest the writer answers each record of an ENQUEUE call with, in order: its entry's
    nonce (version 5), else the digest of its ``rec``, or of its columnar entry's ``cols``."""
    digests: list[bytes] = []
    for fields in _sent_entries(call):
        version = fields.get(FIELD_VERSION, PROTOCOL_VERSION)
        count = int(fields.get(FIELD_COUNT, 1))
        if version == NONCE_VERSION:
            assert len(fields[FIELD_NONCE]) == DIGEST_BYTES
            digests += [fields[FIELD_NONCE]] * count
        elif FIELD_COLUMNS in fields:
            digests += [record_digest(fields[FIELD_COLUMNS], version)] * count
        else:
            digests.append(record_digest(fields[FIELD_RECORD], version))
    return digests


def sent_seqs(call: Call) -> list[str]:
    """The first sequence number of each entry an ENQUEUE call carries."""
    fields = call.args[0][3:]
    return [
        value for name, value in zip(fields[::2], fields[1::2], strict=True) if name == FIELD_SEQ
    ]


def enqueue(
    made: ProducerCore[Future], records: list[dict[str, Any]], timeout: float
) -> list[Future]:
    futures, outgoing = made.register(records, RecordFuture, timeout)
    assert made.buffer.put(outgoing) == len(outgoing)
    return futures


def test_a_lone_record_goes_at_once_and_a_busy_loop_s_records_go_in_one_call() -> None:
    made = core()
    sender = Loop(made.sender())
    assert sender.call == Call(Op.WAIT_BUFFERED, (None,))  # nothing buffered: it waits
    enqueue(made, [record(1)], 60)
    sender.answer()
    call = sender.connect()
    assert call is not None and call.op is Op.ENQUEUE
    assert sent_records(call) == [encode_record(record(1))]
    enqueue(made, [record(i) for i in range(2, 102)], 60)  # while that send is in flight
    sender.answer([b"1-0"])
    call = sender.call
    # Records keep coming: the next send waits out the rest of send_interval_ms (10) since the
    # last one, then takes all 100 together. (On a loaded machine the 10 ms may be over by
    # now: then it goes at once. ``test_a_steady_stream_shares_sends...`` times the wait.)
    assert call is not None and call.op in (Op.WAIT_BUFFERED, Op.CONNECT)
    if call.op is Op.WAIT_BUFFERED:
        assert 0 < call.args[0] <= 0.01
        time.sleep(call.args[0])  # the wait the driver would make
        assert sender.answer().op is Op.CONNECT
    call = sender.connect()
    assert call is not None and call.op is Op.ENQUEUE
    assert sent_records(call) == [encode_record(record(i)) for i in range(2, 102)]
    assert made.outstanding == 101


def test_a_steady_stream_shares_sends_and_a_chunk_s_worth_goes_at_once() -> None:
    buffer: SendBuffer[Any] = SendBuffer(10_000, 4, 1 << 20, 0.0, send_interval_s=0.005)

    def put(count: int, at: float) -> None:
        buffer.put([Outgoing(encode_fields({"id": 1}), None, at + 60, 60) for _ in range(count)])

    put(1, 100.0)
    assert len(buffer.take(100.0)[0]) == 1  # after a quiet spell: at once
    put(1, 100.001)
    assert buffer.take(100.001) == ([], pytest.approx(0.004))  # 5 ms after the last send
    put(1, 100.003)
    chunk, _ = buffer.take(100.005)
    assert len(chunk) == 2  # the two that came meanwhile, together
    put(4, 100.006)
    assert len(buffer.take(100.006)[0]) == 4  # a chunk's worth does not wait
    put(1, 100.007)
    assert len(buffer.take(100.007, linger=False)[0]) == 1  # closing: no waiting


def test_a_full_queue_makes_the_sender_wait_for_a_flush_and_records_fail_at_their_deadline() -> (
    None
):
    made = core(room_recheck_ms=50)
    sender = Loop(made.sender())
    futures = enqueue(made, [record(1), record(2)], 0.2)
    sender.answer()
    sender.connect()
    assert sender.answer([]).op is Op.SUBSCRIBE  # nothing added: the queue is full
    assert sender.answer().op is Op.CONNECT  # subscribed: try once more at once
    sender.connect()
    call = sender.answer([])
    assert call is not None and call.op is Op.AWAIT_FLUSH and call.args[0] <= 0.05
    started = time.monotonic()
    while sender.call is not None and sender.call.op is not Op.WAIT_BUFFERED:
        if sender.call.op is Op.AWAIT_FLUSH:
            time.sleep(sender.call.args[0])  # the wait the driver would make
        if sender.call.op is Op.ENQUEUE:
            sender.answer([])
        elif sender.call.op is Op.CONNECT:
            sender.connect()
        else:
            sender.answer()
    assert time.monotonic() - started < 1
    for future in futures:
        with pytest.raises(QueueFull):
            future.result(timeout=0)
    assert made.outstanding == 0


def test_a_recheck_started_just_before_the_deadline_is_given_time_to_answer() -> None:
    """Else a healthy Redis's answer that a full queue is still full, arriving a moment after
    the deadline, would make the records fail as if Redis were unreachable."""
    made = core(room_recheck_ms=50)
    sender = Loop(made.sender())
    deadline = time.monotonic() + 0.3  # the record's is a moment later
    futures = enqueue(made, [record(1)], 0.3)
    sender.answer()
    sender.connect()
    assert sender.answer([]).op is Op.SUBSCRIBE  # the queue is full
    assert sender.answer().op is Op.CONNECT
    # The next try starts less than LEAST_CALL_WAIT_S before the deadline...
    wait_for(lambda: deadline - time.monotonic() < LEAST_CALL_WAIT_S * 0.8, 5, "the try's time")
    call = sender.connect()
    assert call is not None and call.op is Op.ENQUEUE
    assert call.timeout_s is not None and call.timeout_s >= LEAST_CALL_WAIT_S
    # ...and its answer comes after the deadline, within the call's time.
    wait_for(lambda: time.monotonic() > deadline + 0.01, 5, "the records' deadline")
    sender.answer([])
    while sender.call is not None and sender.call.op is not Op.WAIT_BUFFERED:
        sender.answer()
    with pytest.raises(QueueFull):
        futures[0].result(timeout=0)


def test_a_send_whose_answer_was_lost_goes_again_with_the_same_numbers() -> None:
    made = core()
    sender = Loop(made.sender())
    enqueue(made, [record(1)], 60)
    sender.answer()
    first = sender.connect()
    assert first is not None and first.op is Op.ENQUEUE
    assert sender.fail_with(RedisConnectionError("lost")).op is Op.PAUSE
    sender.answer()
    again = sender.connect()
    assert again is not None and again.op is Op.ENQUEUE
    # The same entry: the same sequence number, the same record.
    assert sent_seqs(first) == sent_seqs(again) == ["1"]
    assert sent_records(first) == sent_records(again) == [encode_record(record(1))]


@pytest.mark.parametrize("written", ["first", "again"])
def test_a_record_sent_twice_is_settled_by_either_sends_nonce_and_no_other(written: str) -> None:
    made = core()
    sender = Loop(made.sender())
    futures = enqueue(made, [record(1), record(2)], 60)
    sender.answer()
    first = sender.connect()
    assert first is not None and first.op is Op.ENQUEUE
    assert sender.fail_with(RedisConnectionError("lost")).op is Op.PAUSE  # the copy may be in
    sender.answer()
    again = sender.connect()
    assert again is not None and again.op is Op.ENQUEUE
    nonces = {"first": sent_digests(first)[0], "again": sent_digests(again)[0]}
    assert nonces["first"] != nonces["again"]  # a nonce a send, from os.urandom
    sender.answer([b"1-0"])
    listener = Loop(made.listener())
    reply = encode_results([(1, None, nonces[written]), (2, None, b"\0" * DIGEST_BYTES)])
    assert listener.answer(reply) == Call(Op.DROP_REPLY, (reply,))
    assert futures[0].result(timeout=0) == WRITTEN
    assert "another client's record" in str(futures[1].exception(timeout=0))


def test_a_nonce_is_its_entrys_alone_so_one_seen_in_the_inbox_settles_no_record_sent_later() -> (
    None
):
    """The queue had room for the first of two entries: the second's records are sent again
    later, and the nonce another client may read in the first entry must not settle them."""
    made = core(pack_records=1)
    sender = Loop(made.sender())
    futures = enqueue(made, [record(1), record(2)], 60)
    sender.answer()
    call = sender.connect()
    assert call is not None and call.op is Op.ENQUEUE
    first, second = (entry[FIELD_NONCE] for entry in _sent_entries(call))
    assert first != second
    sender.answer([1])  # the first entry went in, the second found the queue full
    listener = Loop(made.listener())
    # another client pushed seq 2 with the first entry's nonce, and the writer wrote it
    reply = encode_ranges([(1, None, first), (2, None, first)], 7)
    assert listener.answer(reply) == Call(Op.DROP_REPLY, (reply,))
    assert futures[0].result(timeout=0) == WriteResult(version=7)
    assert "another client's record" in str(futures[1].exception(timeout=0))


def test_records_redis_never_took_fail_unsent_at_their_deadline_with_the_reason() -> None:
    made = core()
    sender = Loop(made.sender())
    (future,) = enqueue(made, [record(1)], 0.1)
    sender.answer()
    while not future.done():
        if sender.call is not None and sender.call.op is Op.CONNECT:
            sender.fail_with(RedisConnectionError("refused"))
        else:
            sender.answer()
    error = future.exception()
    assert isinstance(error, WriteTimeout) and "Redis unreachable" in str(error)
    assert made.outstanding == 0


@pytest.mark.parametrize("protocol", [SHA256_VERSION, NONCE_VERSION])
def test_the_listener_resolves_the_futures_an_answer_names_with_their_digest(
    protocol: bytes,
) -> None:
    made = core()
    sender = Loop(made.sender())
    futures = enqueue(made, [record(1), record(2)], 60)
    sender.answer()
    call = sender.connect(protocol=protocol)
    assert call is not None
    (entry,) = _sent_entries(call)
    assert entry[FIELD_VERSION] == protocol
    assert (FIELD_NONCE in entry) == (protocol == NONCE_VERSION)
    digest = sent_digests(call)[0]
    sender.answer([b"1-0", b"1-1"])
    listener = Loop(made.listener())
    assert listener.call == Call(Op.NEXT_REPLY)
    reply = encode_results([(1, None, digest), (2, None, b"not its digest")])
    assert listener.answer(reply) == Call(Op.DROP_REPLY, (reply,))
    assert futures[0].result(timeout=0) == WRITTEN
    assert "another client's record" in str(futures[1].exception(timeout=0))


def test_a_buffered_record_the_sender_cannot_take_fails_at_its_own_deadline() -> None:
    made = core()
    # the sender is busy elsewhere (a deadline long enough that a loaded machine's stall before
    # the next line does not pass it)
    (future,) = enqueue(made, [record(1)], 0.3)
    abandoner = Loop(made.abandoner())
    call = abandoner.call
    assert call is not None and call.op is Op.WAIT_DUE and 0 < call.args[0] <= 0.3
    time.sleep(call.args[0])  # the wait the driver would make
    abandoner.answer()
    assert isinstance(future.exception(timeout=0), WriteTimeout)
    assert len(made.buffer) == 0


def test_a_full_queue_is_not_sent_the_same_records_again_and_again() -> None:
    made = core(pack_records=1, room_recheck_ms=50)
    sender = Loop(made.sender())
    enqueue(made, [record(i) for i in range(200)], 60)
    sender.answer()
    first = sender.connect()
    assert first is not None and len(sent_records(first)) == 200
    assert sender.answer([b"1-0"] * 20).op is Op.SUBSCRIBE  # room for 20 of 200
    sender.answer()
    again = sender.connect()
    assert again is not None and len(sent_records(again)) == 20  # what fitted, not 180
    sender.answer([b"1-0"] * 20)  # all of them: the next call carries twice as many
    following = sender.connect()
    assert following is not None and len(sent_records(following)) == 40


def test_after_the_writer_s_room_message_the_next_call_carries_every_unsent_record() -> None:
    """The writer tells waiting producers of room only once the queue is half empty: the call
    after its message carries everything, the call after a mere recheck only a probe."""
    made = core(pack_records=1, room_recheck_ms=50)
    sender = Loop(made.sender())
    enqueue(made, [record(i) for i in range(200)], 60)
    sender.answer()
    sender.connect()
    assert sender.answer([]).op is Op.SUBSCRIBE  # the queue is full
    sender.answer()
    probe = sender.connect()
    assert probe is not None and len(sent_records(probe)) == 16  # the least a call carries
    call = sender.answer([])
    assert call is not None and call.op is Op.AWAIT_FLUSH
    recheck = sender.answer(False)  # the wait ran out: no message
    assert recheck is not None and recheck.op is Op.CONNECT
    again = sender.connect()
    assert again is not None and len(sent_records(again)) == 16
    assert sender.answer([]).op is Op.AWAIT_FLUSH
    sender.answer(True)  # the writer's message: the queue has room
    woken = sender.connect()
    assert woken is not None and len(sent_records(woken)) == 200


def test_the_buffer_s_earliest_deadline_is_never_seen_half_changed() -> None:
    """The abandoner reads the buffer's earliest deadline without its lock: while records are
    buffered it never reads "none", nor another deadline, whatever the puts, takes and expiry
    passes on another thread are doing meanwhile."""
    buffer: SendBuffer[Any] = SendBuffer(10_000, 1, 1 << 20, 0.0)
    deadline = 1_000.0

    def outgoing() -> Outgoing[Any]:  # the records of one call: one deadline
        return Outgoing(encode_fields({"id": 1}), None, deadline, 1.0)

    buffer.put([outgoing(), outgoing()])  # takes never empty it: each follows a put

    def changes() -> None:
        while not stop.is_set():
            buffer.put([outgoing()])  # the rest of a call's records, as room appears
            buffer.take(0.0, linger=False)  # the oldest
            buffer.expired(0.0)  # a pass that finds nothing due, rebuilding what it keeps

    stop = threading.Event()
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches between any two steps of a change
    changer = threading.Thread(target=changes)
    changer.start()
    wrong = reads = 0
    try:
        ends = time.monotonic() + 0.5
        while time.monotonic() < ends:
            reads += 1
            if buffer.due_in(0.0) != deadline:
                wrong += 1
    finally:
        stop.set()
        changer.join()
        sys.setswitchinterval(switching)
    assert reads > 1_000 and wrong == 0
