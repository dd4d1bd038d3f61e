"""What one read brings the writer is bounded by bytes, whatever the stream holds: entries over
the writer's limits are refused without the writer ever holding them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.errors import RecordRejected
from tests.support import (
    KEYS,
    WriterProcess,
    pop_answers,
    record,
    stream_entry,
    table_ids,
    wait_for,
)

StartProcess = Callable[..., WriterProcess]
REPLY = KEYS.reply("p1")
MIB = 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def test_a_backlog_of_oversized_entries_never_reaches_the_writer_s_memory(
    writer_process: StartProcess, client: redis.Redis, db_uri: str
) -> None:
    writer = writer_process(
        "--coalesce-ms", "10", "--max-record-bytes", str(MIB), "--max-batch-bytes", str(8 * MIB)
    )
    client.xadd(KEYS.stream, stream_entry(REPLY, 0, encode_record(record(0))))
    assert pop_answers(client, REPLY, 1)[0].error is None  # the writer is up, its table made
    before = peak_rss_mib(writer.process.pid)
    huge = encode_record({"id": -1, "text": "x"}) + os.urandom(40 * MIB)  # 12 of 40 MiB queued
    with client.pipeline() as pipe:  # in one step: the whole backlog is there at once
        for seq in range(1, 25):
            rec = huge if seq % 2 else encode_record(record(seq))
            pipe.xadd(KEYS.stream, stream_entry(REPLY, seq, rec))
        pipe.execute()
    del huge
    results = pop_answers(client, REPLY, 24, timeout=120)
    for seq in range(1, 25, 2):
        error = results[seq].error
        assert isinstance(error, RecordRejected) and "max_record_bytes" in str(error), error
    assert all(results[seq].error is None for seq in range(2, 25, 2))
    assert table_ids(db_uri) == [0, *range(2, 25, 2)]
    grew = peak_rss_mib(writer.process.pid) - before
    assert grew < 160, f"the writer's peak memory grew by {grew:.0f} MiB reading 480 MiB"
    wait_for(lambda: client.xlen(KEYS.stream) == 0, 30, "the stream to empty")
