"""``lancequeue writer`` as a real process: signals, --check, several tables, settings from the
environment, and bad options."""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from lancequeue.producer import Producer
from tests.support import (
    KEYS,
    WRITTEN,
    WriterProcess,
    cli_env,
    free_port,
    pending_count,
    record,
    run_cli,
    table_ids,
    wait_for,
    wait_until_pending,
    writer_alive,
)

StartProcess = Callable[..., WriterProcess]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_flushes_the_records_in_hand_answers_them_and_exits_zero(
    signum: signal.Signals,
    writer_process: StartProcess,
    producer: Producer,
    client: redis.Redis,
    db_uri: str,
) -> None:
    writer = writer_process("--coalesce-ms", "600000", "--max-batch", "1000")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    futures = producer.enqueue_many([record(i) for i in range(5)])
    wait_until_pending(client, 5)  # read by the writer, waiting out a 10-minute window
    assert not any(f.done() for f in futures)
    writer.signal(signum)
    assert writer.wait() == 0
    for future in futures:
        assert future.result(timeout=30) == WRITTEN
    assert table_ids(db_uri) == [0, 1, 2, 3, 4]
    assert pending_count(client) == 0 and not writer_alive(client)
    assert f"{signum.name}: finishing the batch in hand" in writer.log()


def test_a_second_signal_exits_at_once_and_leaves_the_records_pending(
    writer_process: StartProcess,
    producer: Producer,
    client: redis.Redis,
    tmp_path: Path,
    redis_url: str,
    db_uri: str,
) -> None:
    marker = tmp_path / "in-hook"
    env = cli_env(
        LANCEQUEUE_REDIS=redis_url,
        LANCEQUEUE_DB=db_uri,
        LANCEQUEUE_TABLE="docs",
        LANCEQUEUE_TEST_MARKER=str(marker),
    )
    writer = WriterProcess(
        ["--coalesce-ms", "600000", "--on-flushed", "tests.hooks:block_forever"],
        tmp_path / "writer.log",
        env,
    )
    try:
        wait_for(lambda: writer_alive(client), 60, "the writer")
        futures = producer.enqueue_many([record(i) for i in range(3)])
        wait_until_pending(client, 3)
        writer.signal(signal.SIGTERM)  # warm stop: flushes, then hangs in the hook
        wait_for(marker.exists, 60, "the flush to reach the hook")
        writer.signal(signal.SIGTERM)  # cold stop
        assert writer.wait(timeout=30) == 1
        assert pending_count(client) == 3  # not acked: the next writer replays them
        assert not any(f.done() for f in futures)
        producer.close(timeout=0)
    finally:
        writer.close()


def test_a_killed_writer_s_unacked_records_are_replayed_by_the_next_writer(
    writer_process: StartProcess, producer: Producer, client: redis.Redis, db_uri: str
) -> None:
    first = writer_process("--coalesce-ms", "600000", "--max-batch", "1000", "--lease-ms", "800")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    futures = producer.enqueue_many([record(i) for i in range(5)])
    wait_until_pending(client, 5)
    first.signal(signal.SIGKILL)
    first.wait()
    second = writer_process("--coalesce-ms", "20")
    for future in futures:
        assert future.result(timeout=60) == WRITTEN
    assert table_ids(db_uri) == [0, 1, 2, 3, 4]
    assert pending_count(client) == 0
    assert re.search(r"replaying \d+ entries left pending by an earlier writer", second.log())
    consumers = client.xinfo_consumers("lancequeue:{docs}:stream", "writers")
    assert len(consumers) == 1  # the dead writer's consumer is gone
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_writer_check_exits_0_while_a_live_writer_holds_the_lease_and_1_otherwise(
    writer_process: StartProcess, redis_url: str, client: redis.Redis
) -> None:
    check = ("writer", "--check", "--table", "docs", "--redis", redis_url)
    done = run_cli(*check)
    assert done.returncode == 1 and "no writer holds the lease" in done.stdout
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    done = run_cli(*check)
    assert done.returncode == 0, done.stdout + done.stderr
    consumer = client.hget(KEYS.writer, "consumer")
    assert consumer is not None and f"writer {consumer.decode()} holds the lease" in done.stdout
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0
    assert run_cli(*check).returncode == 1  # a stopped writer gives its lease up
    unreachable = run_cli("writer", "--check", "--table", "docs", "--redis", "redis://127.0.0.1:1")
    assert unreachable.returncode == 1 and "cannot check the writer" in unreachable.stderr


def test_one_writer_process_serves_several_tables_each_with_its_own_stream_and_lease(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    port = free_port()
    writer = writer_process(
        "--table", "docs", "--table", "other", "--coalesce-ms", "20",
        "--metrics-port", str(port),
    )  # fmt: skip
    for table in ("docs", "other"):
        wait_for(lambda t=table: writer_alive(client, t), 60, f"the writer of {table}")
    for table, first in (("docs", 0), ("other", 100)):
        with Producer(table, redis_url=redis_url) as made:
            made.write_many([record(i) for i in range(first, first + 20)], timeout=60)
    assert table_ids(db_uri) == list(range(20))
    assert table_ids(db_uri, "other") == list(range(100, 120))
    both = ("writer", "--check", "--table", "docs", "--table", "other", "--redis", redis_url)
    assert run_cli(*both).returncode == 0

    def counted() -> bool:  # a flush is counted once its answers are sent
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        return all(
            f'lancequeue_records_written_total{{table="{table}"}} 20.0' in scraped
            for table in ("docs", "other")
        )

    wait_for(counted, 30, "both tables' rows counted")
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0
    assert run_cli(*both).returncode == 1


def test_writer_settings_come_from_environment_variables(
    redis_url: str, client: redis.Redis, db_uri: str, tmp_path: Path
) -> None:
    marker = tmp_path / "flushes"
    env = cli_env(
        LANCEQUEUE_REDIS=redis_url,
        LANCEQUEUE_DB=db_uri,
        LANCEQUEUE_TABLE="envtable",
        LANCEQUEUE_MAX_BATCH="3",
        LANCEQUEUE_COALESCE_MS="600000",
        LANCEQUEUE_MAX_QUEUE_SIZE="77",
        LANCEQUEUE_ON_FLUSHED="tests.hooks:append_ids",
        LANCEQUEUE_TEST_MARKER=str(marker),
    )
    writer = WriterProcess([], tmp_path / "writer.log", env)
    try:
        wait_for(lambda: writer_alive(client, "envtable"), 60, "the writer")
        wait_for(
            lambda: client.hget("lancequeue:{envtable}:config", "max_queue_size") == b"77",
            30,
            "the writer to publish max_queue_size",
        )
        with Producer("envtable", redis_url=redis_url) as producer:
            producer.write_many([record(i) for i in range(6)], timeout=60)
        assert marker.read_text().split("\n")[:2] == ["0 1 2", "3 4 5"]
        assert table_ids(db_uri, "envtable") == list(range(6))
        writer.signal(signal.SIGTERM)
        assert writer.wait() == 0
    finally:
        writer.close()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--table", "bad name"], "invalid table name 'bad name'"),
        (["--schema", "nosuch:thing"], "--schema 'nosuch:thing': cannot import 'nosuch'"),
        (["--on-flushed", "tests.hooks"], "--on-flushed must look like module:attr"),
        (["--max-batch", "0"], "--max-batch must be a positive integer"),
    ],
)
def test_a_bad_option_is_a_clear_error_before_anything_starts(
    tmp_path: Path, redis_url: str, option: list[str], message: str
) -> None:
    args = ["--table", "docs", "--redis", redis_url, "--db", str(tmp_path / "db"), *option]
    done = run_cli("writer", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "db").exists()
