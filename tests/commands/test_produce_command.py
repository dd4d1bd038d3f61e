"""``lancequeue produce``: JSON Lines, Parquet and CSV files into a table, each bad row named."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import lancedb
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from tests.support import (
    INTERRUPTIBLE_CLI,
    KEYS,
    WriterProcess,
    run_cli,
    table_ids,
    wait_for,
    writer_alive,
)

StartProcess = Callable[..., WriterProcess]


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


def test_produce_with_upsert_key_run_again_after_ctrl_c_writes_each_record_once(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, db_uri: str, tmp_path: Path
) -> None:
    # The writer stops itself once it has answered its first batch, so the run cannot end
    # before the interrupt however slow the machine is.
    writer = writer_process(
        "--coalesce-ms", "20", "--upsert-key", "id", env_extra={"LANCEQUEUE_PAUSE_AT": "after_ack"}
    )
    wait_for(lambda: writer_alive(client), 60, "the writer")
    source = tmp_path / "records.jsonl"
    count = 30_000
    source.write_text(
        "".join(json.dumps({"id": i, "text": f"t{i}", "n": i}) + "\n" for i in range(count))
    )
    command = ["produce", "--table", "docs", "--redis", redis_url, "--upsert-key", "id"]
    interrupted = subprocess.Popen(
        [*INTERRUPTIBLE_CLI, *command, str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(writer.stopped, 60, "the writer to stop after answering its first batch")
    assert int(client.hget(KEYS.writer, "rows") or 0) > 0  # some rows are written
    interrupted.send_signal(signal.SIGINT)
    writer.signal(signal.SIGCONT)
    out, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, err
    assert out.startswith("interrupted: written "), out
    again = run_cli(*command, str(source))
    assert again.returncode == 0, again.stderr
    assert f"written {count:,}, rejected 0, failed 0 (table version " in again.stdout
    assert table_ids(db_uri) == list(range(count))  # each id once
    version = int(again.stdout.rsplit("table version ", 1)[1].split(")")[0])
    table = lancedb.connect(db_uri).open_table("docs")
    table.checkout(version)  # every record written is visible in the version it names
    assert table.count_rows() == count
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0


def test_produce_with_upsert_key_refuses_a_table_whose_writer_appends(
    writer_process: StartProcess, redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    source = tmp_path / "records.jsonl"
    source.write_text(json.dumps({"id": 1}) + "\n")
    command = ["produce", "--table", "docs", "--redis", redis_url, "--upsert-key", "id"]
    done = run_cli(*command, str(source))
    assert done.returncode == 1
    assert "no writer of table 'docs' has said how it writes" in done.stderr
    writer = writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    done = run_cli(*command, str(source))
    assert done.returncode == 1
    assert "appends every record, not upserts by id" in done.stderr
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0
