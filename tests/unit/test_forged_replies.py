"""Replies another client forged or mixed, against the producer's answering core (no Redis): a
record is settled only by its own send's digest, and a forged reply costs no more than its
bytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future
from typing import Any

import msgpack
import numpy as np
import pytest

from lancequeue.common.columns import encode_columns, encode_fields
from lancequeue.common.errors import LancequeueError, RecordRejected, WriteFailed
from lancequeue.common.protocol import RANGED_VERSION
from lancequeue.common.replies import encode_ranges, encode_results, record_digest
from lancequeue.producer.outbox import Outbox
from lancequeue.producer.outgoing import Outgoing
from lancequeue.producer.results import WriteResult
from tests.support import WRITTEN


def ok(future: Future[WriteResult], result: WriteResult) -> None:
    future.set_result(result)


def fail(future: Future[WriteResult], error: LancequeueError) -> None:
    future.set_exception(error)


@pytest.fixture
def outbox() -> Outbox[Future[WriteResult]]:
    made: Outbox[Future[WriteResult]] = Outbox(
        "docs", answer_grace_s=1.0, max_record_bytes=1 << 20, pack_records=64
    )
    # A writer that reads columnar entries and publishes no ``protocol``: entries of version 2.
    made.entries.learn_config([b"64", None, "0" * 32], 0.0)
    return made


def numbered(
    outbox: Outbox[Future[WriteResult]], count: int
) -> list[Outgoing[Future[WriteResult]]]:
    _, outgoing, _ = outbox.register(
        [{"id": i, "vector": np.full(4, i, np.float32)} for i in range(count)], Future, 100.0, 60.0
    )
    outbox.number(outgoing)
    return outgoing


def cols_of(args: list[Any]) -> list[bytes]:
    """The ``cols`` values of the entries of enqueue-script ARGV."""
    return [args[i + 1] for i in range(len(args) - 1) if args[i] == b"cols"]


_DECODE_RESULTS = textwrap.dedent(
    """
    import resource, msgpack
    resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
    from lancequeue.common.replies import decode_results
    try:
        decode_results(msgpack.packb({"ok": [[0, 2**40, b"12345678"]], "errors": []}))
    except ValueError:
        pass  # refusing it is fine
    print("ok")
    """
)


def test_a_record_re_sent_in_an_entry_of_other_records_is_settled_by_either_send_s_digest(
    outbox: Outbox[Future[WriteResult]],
) -> None:
    a, b, c = numbered(outbox, 3)
    first = outbox.entries.script_args([a, b, c], outbox.entries.pack([a, b, c]), 0.0)
    assert outbox.entries.pack([a, b, c]) == [3]
    (first_body,) = cols_of(first)
    for item in (a, b, c):
        item.maybe_sent = True  # the connection failed: the first send may have been pushed
    again = outbox.entries.script_args([b, c], [2], 1.0)  # re-sent without a (say, expired)
    (second_body,) = cols_of(again)
    assert first_body != second_body
    outbox.confirm([a, b, c])
    # The writer wrote the first send (its digest) and answered the copy as a duplicate.
    duplicate = {"error": "WriteFailed", "message": "copy", "cause": "Duplicate"}
    outbox.settle(
        encode_ranges(
            [
                (a.seq, None, record_digest(first_body)),
                (b.seq, None, record_digest(first_body)),
                (c.seq, None, record_digest(first_body)),
                (b.seq, duplicate, None),
                (c.seq, duplicate, None),
            ]
        ),
        ok,
        fail,
    )
    assert [item.future.result(0) for item in (a, b, c)] == [WRITTEN] * 3
    assert len(outbox) == 0


def test_an_ok_carrying_neither_send_s_digest_fails_the_record_as_not_written(
    outbox: Outbox[Future[WriteResult]],
) -> None:
    a, b = numbered(outbox, 2)
    outbox.entries.script_args([a, b], [2], 0.0)
    outbox.entries.script_args([a, b], [1, 1], 1.0)  # and once as single-record entries
    assert len(a.digests) == 2
    outbox.confirm([a, b])
    forged = encode_columns([encode_fields({"id": 9}), encode_fields({"id": 10})])
    outbox.settle(encode_ranges([(a.seq, None, record_digest(forged))]), ok, fail)
    error = a.future.exception(0)
    assert isinstance(error, WriteFailed) and error.error_type == "SequenceConflict"
    outbox.settle(encode_results([(b.seq, None, b.digests[-1])]), ok, fail)  # old form
    assert b.future.result(0) == WRITTEN


def test_records_sent_as_a_version_2_columnar_entry_are_settled_by_a_per_record_reply(
    outbox: Outbox[Future[WriteResult]],
) -> None:
    items = numbered(outbox, 3)
    args = outbox.entries.script_args(items, [3], 0.0)
    assert args[args.index(b"v") + 1] == RANGED_VERSION
    (body,) = cols_of(args)
    outbox.confirm(items)
    rejected = {"error": "RecordRejected", "message": "field 'x'", "cause": "RecordRejected"}
    digest = record_digest(body)
    outbox.settle(
        encode_results([(items[0].seq, None, digest), (items[1].seq, rejected, None)]), ok, fail
    )
    assert items[0].future.result(0) == WRITTEN
    assert isinstance(items[1].future.exception(0), RecordRejected)
    assert not items[2].future.done()


def test_a_forged_reply_of_many_ranges_costs_no_more_than_its_bytes(
    outbox: Outbox[Future[WriteResult]],
) -> None:
    items = numbered(outbox, 4096)
    outbox.entries.script_args(items, [1] * len(items), 0.0)
    outbox.confirm(items)
    base = items[-1].seq + 10
    width = len(items) - 1
    ranges = [[base + i * width, base + i * width + width - 1, b"d" * 8] for i in range(40_000)]
    message = msgpack.packb({"ok": ranges, "errors": []})
    per_record = encode_results([(base + i, None, b"d" * 8) for i in range(len(message) // 14)])
    started = time.monotonic()
    outbox.settle(per_record, ok, fail)
    per_record_s = time.monotonic() - started
    started = time.monotonic()
    outbox.settle(message, ok, fail)
    ranged_s = time.monotonic() - started
    assert len(outbox) == len(items)  # neither settled anything
    assert ranged_s < 10 * per_record_s + 0.2, (ranged_s, per_record_s)


def test_decode_results_survives_a_reply_naming_an_enormous_range() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_RESULTS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]
