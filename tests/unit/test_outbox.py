"""The producer's answering core, free of I/O: which answer resolves which future, and how.

No Redis here: replies are built as the writer builds them (``encode_results``) and fed to the
outbox, as the drivers do.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import msgpack
import pytest

from lancequeue.common.errors import (
    LancequeueError,
    OutcomeUnknown,
    WriteFailed,
    WriteTimeout,
)
from lancequeue.common.replies import (
    decode_results,
    encode_ranges,
    encode_results,
    error_payload,
    record_digest,
)
from lancequeue.producer.outbox import ABANDON_RETRY_PAUSE_S, Outbox
from lancequeue.producer.outgoing import Outgoing
from lancequeue.producer.results import WriteResult
from tests.support import WRITTEN

Future = concurrent.futures.Future[WriteResult]
DUPLICATE = error_payload("WriteFailed", "a copy", "Duplicate")


def ok(future: Future, result: WriteResult) -> None:
    future.set_result(result)


def fail(future: Future, error: LancequeueError) -> None:
    future.set_exception(error)


def sent(
    outbox: Outbox[Future], *records: bytes, deadline: float = 100.0
) -> list[Outgoing[Future]]:
    """Register and number records as a send does; all confirmed in the stream."""
    _, outgoing, _ = outbox.register(
        [{"text": text.decode()} for text in records], Future, deadline, 60.0
    )
    outbox.number(outgoing)
    outbox.entries.script_args(outgoing, [1] * len(outgoing), 0.0)  # sent as single entries
    outbox.confirm(outgoing)
    return outgoing


def answer(
    outbox: Outbox[Future], *results: tuple[int, dict[str, str] | None, bytes | None]
) -> None:
    outbox.settle(encode_results(list(results)), ok, fail)


@pytest.fixture
def outbox() -> Outbox[Future]:
    return Outbox("docs", answer_grace_s=1.0, max_record_bytes=1 << 20)


def test_an_ok_answer_resolves_a_record_only_with_its_own_digest(outbox: Outbox[Future]) -> None:
    mine, other = sent(outbox, b"a", b"b")
    answer(outbox, (mine.seq, None, mine.digests[0]), (other.seq, None, record_digest(b"forged")))
    assert mine.future.result() == WRITTEN
    error = other.future.exception()
    assert isinstance(error, WriteFailed) and error.error_type == "SequenceConflict"
    assert "was not written" in str(error)


def test_a_duplicate_answer_fails_a_record_sent_once_but_not_one_that_may_have_an_earlier_copy(
    outbox: Outbox[Future],
) -> None:
    once, resent = sent(outbox, b"a", b"b")
    resent.maybe_sent = True  # a send of it went unconfirmed: an earlier copy may be written
    answer(outbox, (once.seq, DUPLICATE, None), (resent.seq, DUPLICATE, None))
    error = once.future.exception()
    assert isinstance(error, WriteFailed) and error.error_type == "Duplicate"
    assert not resent.future.done()  # its own earlier copy's answer may yet say otherwise
    assert len(outbox) == 1


def test_an_answer_settles_earlier_records_never_confirmed_in_the_stream_as_not_written(
    outbox: Outbox[Future],
) -> None:
    _, (lost,), _ = outbox.register([{"text": "a"}], Future, 100.0, 60.0)
    outbox.number([lost])  # its send went unconfirmed and was given up
    lost.maybe_sent = True
    confirmed, later = sent(outbox, b"b", b"c")
    answer(outbox, (later.seq, None, later.digests[0]))
    assert later.future.result() == WRITTEN
    assert isinstance(lost.future.exception(), WriteTimeout)  # it never reached the stream
    assert not confirmed.future.done()  # in the stream: only its own answer settles it


def test_records_due_are_abandoned_or_wait_for_the_writer_that_claimed_them(
    outbox: Outbox[Future],
) -> None:
    first, second, third = sent(outbox, b"a", b"b", b"c", deadline=10.0)
    assert outbox.to_abandon(10.5) == ([], 0.5)  # due at the deadline plus the grace
    due, _ = outbox.to_abandon(11.0)
    assert due == [first.seq, second.seq, third.seq]
    outbox.abandoned(due, [str(first.seq).encode(), third.seq], fail)
    assert isinstance(first.future.exception(), WriteTimeout)
    assert isinstance(third.future.exception(), WriteTimeout)
    assert not second.future.done() and second.claimed  # a writer owes it its answer
    assert outbox.to_abandon(1000.0) == ([], None)  # abandoned once, never again
    answer(outbox, (second.seq, None, second.digests[0]))
    assert second.future.result() == WRITTEN


def test_a_record_redis_cannot_be_asked_about_is_tried_again_then_ends_unknown_within_its_slack(
    outbox: Outbox[Future],
) -> None:
    (item,) = sent(outbox, b"a", deadline=10.0)
    due, _ = outbox.to_abandon(11.0)
    outbox.unreachable(due, ConnectionError("refused"), 11.0, fail)
    assert not item.future.done()  # its slack (ABANDON_WITHIN_S) is not up: tried again
    assert outbox.to_abandon(11.0) == ([], pytest.approx(ABANDON_RETRY_PAUSE_S))
    due, _ = outbox.to_abandon(11.5)
    assert due == [item.seq]
    outbox.unreachable(due, TimeoutError("no answer"), 11.8, fail)  # another try would end late
    error = item.future.exception()
    assert isinstance(error, OutcomeUnknown) and isinstance(error, TimeoutError)
    assert "may or may not be in the table" in str(error)


def test_a_record_numbered_with_an_earlier_due_time_wakes_the_abandoning_loop(
    outbox: Outbox[Future],
) -> None:
    woken: list[bool] = []
    outbox.on_sooner_due = lambda: woken.append(True)
    sent(outbox, b"a", deadline=50.0)
    sent(outbox, b"b", deadline=60.0)
    sent(outbox, b"c", deadline=20.0)
    assert woken == [True, True]  # the first, and the one due sooner than all others


def test_records_whose_try_failed_go_again_with_every_new_record_due_so_none_starves(
    outbox: Outbox[Future],
) -> None:
    (early,) = sent(outbox, b"a", deadline=10.0)
    (late,) = sent(outbox, b"b", deadline=10.02)
    due, _ = outbox.to_abandon(11.0)
    outbox.unreachable(due, TimeoutError("no answer"), 11.0, fail)
    # Before the pause after a failed try is over, a new record is due: both go now.
    due, _ = outbox.to_abandon(11.02)
    assert due == [early.seq, late.seq]


def test_numbers_of_records_never_sent_are_handed_out_again_with_no_stale_deadline(
    outbox: Outbox[Future],
) -> None:
    (kept,) = sent(outbox, b"a", deadline=50.0)
    unsent = sent(outbox, b"b", b"c", deadline=10.0)  # numbered, then never reached Redis
    outbox.forget(unsent)
    (again,) = sent(outbox, b"d", deadline=90.0)
    assert again.seq == kept.seq + 1  # no gap in the producer's numbers
    assert outbox.to_abandon(11.0) == ([], pytest.approx(40.0))  # not due at b's deadline


def test_records_sent_before_redis_lost_its_data_end_unknown(outbox: Outbox[Future]) -> None:
    (item,) = sent(outbox, b"a", deadline=10.0)
    due, _ = outbox.to_abandon(11.0)
    outbox.abandoned(due, -1, fail)  # the abandon script: the stream's epoch changed
    error = item.future.exception()
    assert isinstance(error, OutcomeUnknown) and "lost its data" in str(error)


def test_a_reply_in_ranges_resolves_each_record_of_a_range_by_the_range_s_digest(
    outbox: Outbox[Future],
) -> None:
    first, second, third, fourth = sent(outbox, b"a", b"b", b"c", b"d")
    for item in (first, second, third):
        item.digests += (b"entry-digest",)  # as if sent together in one columnar entry
    rejected = error_payload("RecordRejected", "field 'x'", "RecordRejected")
    outbox.settle(
        encode_ranges(
            [
                (first.seq, None, b"entry-digest"),
                (second.seq, None, b"entry-digest"),
                (third.seq, None, b"another digest"),
                (fourth.seq, rejected, None),
            ]
        ),
        ok,
        fail,
    )
    assert first.future.result() == WRITTEN and second.future.result() == WRITTEN
    conflict = third.future.exception()
    assert isinstance(conflict, WriteFailed) and conflict.error_type == "SequenceConflict"
    assert "field 'x'" in str(fourth.future.exception())
    assert len(outbox) == 0


def test_a_reply_naming_an_enormous_range_settles_only_the_records_waiting_in_it(
    outbox: Outbox[Future],
) -> None:
    (item,) = sent(outbox, b"a")
    started = time.monotonic()
    message = msgpack.packb({"ok": [[0, 2**53 - 1, item.digests[0]]], "errors": []})
    outbox.settle(message, ok, fail)
    assert item.future.result() == WRITTEN
    assert time.monotonic() - started < 1.0  # not one step per number of the range


@pytest.mark.parametrize(
    "message",
    [
        {"ok": [[5, 4, b"d"]], "errors": []},  # first after last
        {"ok": [[1, 2]], "errors": []},
        {"ok": "all", "errors": []},
        {"ok": [], "errors": [[1]]},
    ],
)
def test_a_malformed_reply_in_ranges_settles_nothing(
    outbox: Outbox[Future], message: dict[str, Any]
) -> None:
    (item,) = sent(outbox, b"a")
    outbox.settle(msgpack.packb(message), ok, fail)
    assert not item.future.done()


def test_both_reply_forms_say_the_same() -> None:
    answers = [
        (1, None, b"d1"),
        (2, None, b"d1"),
        (3, error_payload("WriteTimeout", "late", "expired"), None),
        (4, None, b"d2"),
    ]
    per_record, in_ranges = (
        decode_results(encode_results(answers)),
        decode_results(encode_ranges(answers)),
    )
    assert [(r.seq, r.digest, type(r.error)) for r in per_record] == [
        (r.seq, r.digest, type(r.error)) for r in in_ranges
    ]
    assert msgpack.unpackb(encode_ranges(answers))["ok"] == [[1, 2, b"d1"], [4, 4, b"d2"]]
