"""Exactly once across writer crashes: the watermark committed with the data, deadlines, and
re-sent records. Entries are built by hand here (as PROTOCOL.md describes) so each test controls
exactly what is in the stream."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import RecordRejected, WriteFailed, WriteTimeout
from lancequeue.common.replies import Result
from tests.support import (
    KEYS,
    WriterProcess,
    pending_count,
    pop_answers,
    record,
    run_cli,
    stream_entry,
    table_ids,
    wait_for,
    wait_until_pending,
    writer_alive,
)

StartProcess = Callable[..., WriterProcess]
REPLY = KEYS.reply("p1")


def send(client: redis.Redis, seqs: range | list[int], ttl_ms: int = 600_000) -> None:
    """Add one entry per seq, its record's id = seq; seq 99 carries a record whose id is not a
    number, which a table with an integer id column rejects."""
    with client.pipeline() as pipe:
        for seq in seqs:
            rec = {"id": "not a number"} if seq == 99 else record(seq)
            pipe.xadd(KEYS.stream, stream_entry(REPLY, seq, encode_record(rec), ttl_ms))
        pipe.execute()


def answers(client: redis.Redis, count: int, timeout: float = 60.0) -> dict[int, Result]:
    """Pop reply messages until ``count`` results arrived."""
    return pop_answers(client, REPLY, count, timeout)


def crash_at(
    point: str,
    writer_process: StartProcess,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
) -> WriterProcess:
    """Start a writer that kills itself at ``point``; return it once it is dead."""
    monkeypatch.setenv("LANCEQUEUE_CRASH_AT", point)
    crashing = writer_process("--coalesce-ms", "50", "--lease-ms", "800", *args)
    monkeypatch.delenv("LANCEQUEUE_CRASH_AT")
    assert crashing.wait() == -signal.SIGKILL, crashing.log()
    return crashing


@pytest.mark.parametrize("point", ["after_commit", "mid_append"])
def test_a_writer_killed_during_a_flush_leaves_every_record_in_the_table_exactly_once(
    point: str,
    writer_process: StartProcess,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(client, range(1, 6))
    crash_at(point, writer_process, client, monkeypatch)
    assert pending_count(client) == 5  # read, never acked
    restarted = writer_process("--coalesce-ms", "50")
    results = answers(client, 5)
    assert all(result.error is None for result in results.values())
    assert table_ids(db_uri) == [1, 2, 3, 4, 5]
    if point == "after_commit":
        assert "are in the table already" in restarted.log()
    assert pending_count(client) == 0
    restarted.signal(signal.SIGTERM)
    assert restarted.wait() == 0


def test_a_record_rejected_in_a_batch_that_committed_gets_its_rejection_after_the_crash(
    writer_process: StartProcess,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(client, [1])
    first = writer_process("--coalesce-ms", "10")
    answers(client, 1)  # the table exists now, with an int id column
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    send(client, [2, 99, 3])
    crash_at("after_commit", writer_process, client, monkeypatch)
    writer_process("--coalesce-ms", "50")
    results = answers(client, 3)
    assert results[2].error is None and results[3].error is None
    assert isinstance(results[99].error, RecordRejected)
    assert "id" in str(results[99].error)
    assert table_ids(db_uri) == [1, 2, 3]


def test_a_writer_killed_after_committing_past_a_batch_it_had_not_answered_answers_both(
    writer_process: StartProcess,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch commits without waiting for the answers of the one before; its watermark lists
    them. Killed then, the writer leaves both batches pending: the next one answers every
    record, the rejected one with its rejection, and writes none again."""
    send(client, [1])
    first = writer_process("--coalesce-ms", "10")
    answers(client, 1)  # the table exists now, with an int id column
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    send(client, [2, 99, 100, 101])  # two batches: [2, 99] (99 rejected), then [100, 101]
    hold = ("--max-batch", "2", "--on-flushed", "tests.hooks:hold_the_batch_of_id_2")
    crashed = crash_at("after_commit:2", writer_process, client, monkeypatch, *hold)
    assert table_ids(db_uri) == [1, 2, 100, 101]  # the second batch committed...
    assert pending_count(client) == 4  # ...and neither batch was acked or answered
    assert client.llen(REPLY) == 0, crashed.log()
    restarted = writer_process("--coalesce-ms", "50")
    results = answers(client, 4)
    assert [results[seq].error for seq in (2, 100, 101)] == [None] * 3
    assert isinstance(results[99].error, RecordRejected)
    assert "id" in str(results[99].error)
    assert table_ids(db_uri) == [1, 2, 100, 101]
    assert "are in the table already" in restarted.log()
    assert pending_count(client) == 0


def test_a_record_past_its_deadline_when_its_batch_is_built_is_answered_write_timeout_not_written(
    writer_process: StartProcess, client: redis.Redis, db_uri: str
) -> None:
    send(client, [1], ttl_ms=600_000)
    send(client, [2], ttl_ms=0)  # expired by the time any writer reads it
    writer_process("--coalesce-ms", "10")
    results = answers(client, 2)
    assert results[1].error is None
    assert isinstance(results[2].error, WriteTimeout)
    assert "not written" in str(results[2].error)
    assert table_ids(db_uri) == [1]


def test_a_record_sent_twice_with_the_same_identity_is_written_once_and_answered_once(
    writer_process: StartProcess, client: redis.Redis, db_uri: str
) -> None:
    send(client, [1, 2, 2, 3])  # 2 re-sent: its first send's confirmation was lost
    writer = writer_process("--coalesce-ms", "10")
    answers(client, 3)
    send(client, [3, 4])  # 3 again, in a later batch
    answers(client, 1)
    assert table_ids(db_uri) == [1, 2, 3, 4]
    wait_for(lambda: pending_count(client) == 0 and client.xlen(KEYS.stream) == 0, 30, "acks")
    assert client.llen(REPLY) == 0  # no answer for the duplicates
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_an_entry_that_keeps_killing_the_writer_goes_to_the_dead_letters_and_its_producer_is_told(
    writer_process: StartProcess,
    client: redis.Redis,
    db_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(client, [1])
    for _ in range(2):  # read twice, killing the writer each time
        crash_at("mid_append", writer_process, client, monkeypatch, "--max-deliveries", "2")
        wait_until_pending(client, 1)
    writer = writer_process("--coalesce-ms", "10", "--max-deliveries", "2")
    result = answers(client, 1)[1]
    assert isinstance(result.error, WriteFailed)
    assert "dead letters" in str(result.error)
    assert table_ids(db_uri) == []
    listed = run_cli("dlq", "list", "--table", "docs", "--redis", client_url(client))
    assert listed.returncode == 0, listed.stderr
    assert "deliveries=3" in listed.stdout
    wait_for(lambda: writer_alive(client), 30, "the writer")
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_a_record_over_the_writer_s_size_limit_is_rejected_alone(
    writer_process: StartProcess, client: redis.Redis, db_uri: str
) -> None:
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, stream_entry(REPLY, 1, encode_record(record(1))))
        big = {"id": 2, "text": "x" * 20_000}
        pipe.xadd(KEYS.stream, stream_entry(REPLY, 2, encode_record(big)))
        pipe.xadd(KEYS.stream, stream_entry(REPLY, 3, encode_record(record(3))))
        pipe.execute()
    writer_process("--coalesce-ms", "10", "--max-record-bytes", "10000")
    results = answers(client, 3)
    assert isinstance(results[2].error, RecordRejected)
    assert "max_record_bytes" in str(results[2].error)
    assert results[1].error is None and results[3].error is None
    assert table_ids(db_uri) == [1, 3]


def client_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"
