"""Real processes, real signals: several producers, the writer as a subprocess."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import lancedb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from lancequeue.common import embedded_redis
from lancequeue.common.errors import RedisUnavailable
from lancequeue.producer import AsyncProducer, Producer
from tests.support import (
    CLI,
    KEYS,
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

PRODUCER_SCRIPT = """
import sys
from lancequeue.producer import Producer
from tests.support import record
start, count, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Producer("docs", redis_url=url) as producer:
    ids = list(range(start, start + count))
    half = count // 2
    for i in ids[:half:2]:
        producer.write(record(i), timeout=120)          # one at a time
    for i in ids[1:half:2]:
        producer.enqueue(record(i))                      # futures resolved at close
    producer.write_many([record(i) for i in ids[half:]], timeout=120)
print("done")
"""


def test_several_producer_processes_write_and_every_record_lands_exactly_once(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    writer = writer_process("--coalesce-ms", "50", "--max-batch", "64")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER_SCRIPT, str(k * 1000), "250", redis_url],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for process in producers:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        assert out.strip() == "done"
    expected = sorted(k * 1000 + i for k in range(4) for i in range(250))
    assert table_ids(db_uri) == expected  # all there, none twice
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


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
        assert future.result(timeout=30) is None
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
        assert future.result(timeout=60) is None
    assert table_ids(db_uri) == [0, 1, 2, 3, 4]
    assert pending_count(client) == 0
    assert re.search(r"replaying \d+ entries left pending by an earlier writer", second.log())
    consumers = client.xinfo_consumers("lancequeue:{docs}:stream", "writers")
    assert len(consumers) == 1  # the dead writer's consumer is gone
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_with_no_redis_url_writer_and_producers_share_an_embedded_redis_that_outlives_a_crash(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(LANCEQUEUE_DATA_DIR=str(data_dir), LANCEQUEUE_TABLE="docs")
    writer = WriterProcess(
        ["--coalesce-ms", "600000", "--lease-ms", "800"], tmp_path / "w1.log", env
    )
    try:
        wait_for(lambda: embedded_redis.is_running(data_dir), 60, "the embedded redis")
        url = embedded_redis.url_for(data_dir)
        with redis.Redis.from_url(url) as embedded, Producer("docs", data_dir=data_dir) as producer:
            wait_for(lambda: writer_alive(embedded), 60, "the writer")
            futures = producer.enqueue_many([record(i) for i in range(4)])
            wait_until_pending(embedded, 4)
            writer.signal(signal.SIGKILL)
            writer.wait()
            assert embedded_redis.is_running(data_dir)  # the server outlived the writer
            aof = data_dir / "redis"
            assert any(aof.rglob("*.aof")), "AOF persistence is on"
            restarted = WriterProcess([], tmp_path / "w2.log", env)
            try:
                for future in futures:
                    assert future.result(timeout=60) is None
            finally:
                restarted.signal(signal.SIGTERM)
                assert restarted.wait() == 0
        assert table_ids(str(data_dir / "db")) == [0, 1, 2, 3]
    finally:
        writer.close()
        embedded_redis.stop(data_dir)


def test_a_producer_with_no_redis_url_and_no_embedded_server_fails_at_once_and_starts_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URL anywhere and no writer started: a producer must not start a Redis of its own
    (one nobody reads), but say so at once, naming both remedies."""
    monkeypatch.delenv("LANCEQUEUE_REDIS", raising=False)
    data_dir = tmp_path / "data"
    remedies = ("LANCEQUEUE_REDIS", "--redis", "start the writer", "lancequeue redis start")
    try:
        with pytest.raises(RedisUnavailable) as sync_refused:
            Producer("docs", data_dir=data_dir)

        async def start_async() -> None:
            async with AsyncProducer("docs", data_dir=data_dir) as producer:
                await producer.enqueue(record(1))

        with pytest.raises(RedisUnavailable) as async_refused:
            asyncio.run(start_async())
        done = subprocess.run(
            [*CLI, "produce", "--table", "docs", "--data-dir", str(data_dir)],
            input="",
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
        )
        for said in (str(sync_refused.value), str(async_refused.value), done.stderr):
            assert all(remedy in said for remedy in remedies), said
            assert str(data_dir) in said
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert not data_dir.exists()  # no server, no AOF, not even the directory
        assert not embedded_redis.is_running(data_dir)
    finally:
        embedded_redis.stop(data_dir)  # what a producer that did start one left running


def test_produce_command_writes_json_lines_and_reports_what_was_rejected(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str, tmp_path: Path
) -> None:
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    source = tmp_path / "records.jsonl"
    lines = [{"id": i, "text": f"t{i}", "vector": [float(i), 0.5, 0.25]} for i in range(20)]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    done = run_cli("produce", "--table", "docs", "--redis", redis_url, str(source))
    assert done.returncode == 0, done.stderr
    assert "written 20, rejected 0, failed 0" in done.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": 100, "text": "x", "vector": [1.0]})
        + "\n"
        + json.dumps({"id": 101, "text": "y", "vector": [1.0, 2.0, 3.0]})
        + "\nnot json\n[1, 2]\n"
    )
    done = run_cli("produce", "--table", "docs", "--redis", redis_url, str(bad))
    assert done.returncode == 1
    assert "written 1, rejected 3, failed 0" in done.stdout
    assert "bad.jsonl:1" in done.stderr and "expected a vector of 3 floats, got 1" in done.stderr
    assert "bad.jsonl:3: not JSON" in done.stderr
    assert "bad.jsonl:4: a record must be a mapping" in done.stderr
    assert table_ids(db_uri) == [*range(20), 101]
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_produce_reads_parquet_and_csv_files_and_names_each_bad_row(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str, tmp_path: Path
) -> None:
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    parquet_path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(range(1000), pa.int64()),
                "text": [f"t{i}" for i in range(1000)],
                "vector": [[float(i), 0.5, 0.25] for i in range(1000)],
            }
        ),
        parquet_path,
        row_group_size=100,
    )
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(
        "id,text,vector\n"
        '1000,"a, with a comma","[1.0, 2.0, 3.0]"\n'
        '1001,b,"[1.0, 2.0]"\n'  # line 3: a vector of the wrong length
        "1002,c\n"  # line 4: a cell short
        '1003,02134,"[0.0, 0.0, 1.0]"\n'  # text that looks like a number stays text
    )
    broken_path = tmp_path / "broken.csv"
    broken_path.write_bytes(b"id,text\n2000,\xff\xfe\n")  # not UTF-8
    done = run_cli(
        "produce", "--table", "docs", "--redis", redis_url, "--batch", "64",
        "--concurrency", "3", str(parquet_path), str(csv_path), str(broken_path),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "written 1,002, rejected 3, failed 0" in done.stdout
    assert "rows.csv:3" in done.stderr and "expected a vector of 3 floats, got 2" in done.stderr
    assert "rows.csv:4: the row does not have one cell per column" in done.stderr
    assert "broken.csv: cannot read on: UnicodeDecodeError" in done.stderr
    assert table_ids(db_uri) == [*range(1000), 1000, 1003]
    texts = lancedb.connect(db_uri).open_table("docs").to_arrow().column("text").to_pylist()
    assert "02134" in texts
    unknown = run_cli("produce", "--table", "docs", "--redis", redis_url, str(tmp_path / "x.txt"))
    assert unknown.returncode == 2 and "--format" in unknown.stderr
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_status_command_prints_a_table_and_json(
    writer_process: StartProcess, producer: Producer, redis_url: str, client: redis.Redis
) -> None:
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    producer.write_many([record(i) for i in range(10)], timeout=60)
    done = run_cli("status", "--table", "docs", "--redis", redis_url, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["writer_alive"] is True and status["rows_written"] == 10
    assert status["table_rows"] == 10 and status["queue_depth"] == 0
    done = run_cli("status", "--table", "docs", env=cli_env(LANCEQUEUE_REDIS=redis_url))
    assert "queue depth" in done.stdout and "alive" in done.stdout
    assert "oldest pending" in done.stdout
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0
    done = run_cli("status", "--table", "docs", "--redis", redis_url, "--json")
    assert json.loads(done.stdout)["writer_alive"] is False
    assert done.returncode == 1 and "no writer is serving table 'docs'" in done.stderr


def test_status_watch_refreshes_until_ctrl_c(
    writer_process: StartProcess, producer: Producer, redis_url: str, client: redis.Redis
) -> None:
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    command = [
        sys.executable,
        "-c",  # Ctrl-C handled as in a terminal (a suite in the background ignores SIGINT)
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from lancequeue.cli import main; main()",
        "status", "--table", "docs", "--redis", redis_url, "--json", "--watch", "0.1",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=cli_env()) as watching:
        try:
            assert watching.stdout is not None
            first = json.loads(watching.stdout.readline())
            producer.write_many([record(i) for i in range(5)], timeout=60)
            while (line := json.loads(watching.stdout.readline()))["rows_written"] != 5:
                pass  # each line is one refresh; it shows the rows once they are written
            assert first["writer_alive"] is True and first["rows_per_s"] is None
            assert line["rows_per_s"] > 0  # the rows written since the refresh before
            assert line["oldest_pending_ms"] is None  # nothing read and not acked
            watching.send_signal(signal.SIGINT)
            assert watching.wait(30) == 0
        finally:
            if watching.poll() is None:
                watching.kill()
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


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
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    for table in ("docs", "other"):
        assert f'lancequeue_records_written_total{{table="{table}"}} 20.0' in scraped
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
