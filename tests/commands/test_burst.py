"""``lancequeue writer --burst``: serve until the queue is empty, then flush, answer and exit 0
(rq's and arq's ``--burst``), for batch jobs and tests."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import redis

from lancequeue.producer import Producer
from tests.support import (
    WRITTEN,
    WriterProcess,
    queued_records,
    record,
    table_ids,
    wait_for,
    wait_until_pending,
    writer_alive,
)

StartProcess = Callable[..., WriterProcess]
NEVER_BY_WINDOW = ("--coalesce-ms", "600000")
"""A window no burst may wait for: each test's deadline is far shorter."""


def test_a_burst_writes_what_is_queued_answers_it_and_exits_0_without_waiting_a_window(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    with Producer("docs", redis_url=redis_url) as producer:
        futures = producer.enqueue_many([record(i) for i in range(300)])
        wait_for(lambda: queued_records(client) == 300, 60, "the records in Redis")
        burst = writer_process("--burst", "--max-batch", "64", *NEVER_BY_WINDOW)
        assert burst.wait(timeout=60) == 0, burst.log()
        assert all(future.result(timeout=30) == WRITTEN for future in futures)
    assert table_ids(db_uri) == list(range(300))
    assert "burst: the queue of table 'docs' is empty" in burst.log()

    again = writer_process("--burst", *NEVER_BY_WINDOW)  # nothing queued: done at once
    assert again.wait(timeout=60) == 0, again.log()
    assert table_ids(db_uri) == list(range(300))


def test_a_burst_writer_takes_over_and_settles_what_a_killed_writer_left_pending(
    writer_process: StartProcess,
    redis_url: str,
    client: redis.Redis,
    db_uri: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "flushed"
    first = writer_process(
        "--lease-ms", "800", "--max-batch", "8", "--coalesce-ms", "20",
        "--on-flushed", "tests.hooks:block_forever",
        env_extra={"LANCEQUEUE_TEST_MARKER": str(marker)},
    )  # fmt: skip
    with Producer("docs", redis_url=redis_url) as producer:
        futures = producer.enqueue_many([record(i) for i in range(8)])
        wait_for(marker.exists, 60, "the first batch committed, unanswered")
        futures += producer.enqueue_many([record(i) for i in range(8, 20)])
        wait_until_pending(client, 8)
        first.signal(signal.SIGKILL)
        first.wait()
        burst = writer_process("--burst", "--lease-ms", "800", *NEVER_BY_WINDOW)
        assert burst.wait(timeout=60) == 0, burst.log()
        assert all(future.result(timeout=30) == WRITTEN for future in futures)
    assert table_ids(db_uri) == list(range(20))  # the committed batch was not written twice


def test_a_burst_writer_leaves_a_table_a_live_writer_serves_to_it_and_exits_0(
    writer_process: StartProcess, client: redis.Redis
) -> None:
    serving = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the serving writer")
    burst = writer_process("--burst")
    assert burst.wait(timeout=60) == 0, burst.log()  # not standing by for a lease
    assert "holds table 'docs': it serves the queue" in burst.log()
    assert serving.process.poll() is None
