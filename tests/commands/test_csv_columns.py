"""``lancequeue produce`` types CSV cells by the table's columns, as its writer publishes them
(``columns`` in the config hash), and guesses only for a table that does not exist yet: a text
column whose cells are all digits stays text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import lancedb
import redis

from lancequeue.common.errors import RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import CONFIG_COLUMNS
from lancequeue.producer import Producer
from lancequeue.producer.sources import read_items
from tests.support import WriterProcess, run_cli, wait_for, writer_alive

CSV = 'id,zip,score,ok,vector\n1,12345,3,true,"[1.0, 2.0]"\n2,777,4.5,0,"[3.0, 4.0]"\n'
KINDS = {"id": "integer", "zip": "string", "score": "number", "ok": "boolean", "vector": "list"}


def test_cells_are_typed_by_the_columns_given_and_guessed_for_the_others(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(CSV + "3,9,x,true,[]\n")
    typed = [record for _, record in read_items(str(path), "csv", KINDS)]
    assert typed[:2] == [
        {"id": 1, "zip": "12345", "score": 3.0, "ok": True, "vector": [1.0, 2.0]},
        {"id": 2, "zip": "777", "score": 4.5, "ok": False, "vector": [3.0, 4.0]},
    ]
    assert isinstance(typed[2], RecordRejected) and "'score' holds a number" in str(typed[2])
    guessed = [record for _, record in read_items(str(path), "csv", {"id": "integer"})]
    assert guessed[0]["zip"] == 12345  # no table yet: guessed from the cells, digits as numbers


def test_produce_types_csv_columns_by_the_existing_table(
    writer_process: Callable[..., WriterProcess],
    producer: Producer,
    redis_url: str,
    client: redis.Redis,
    db_uri: str,
    tmp_path: Path,
) -> None:
    writer_process("--coalesce-ms", "20")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    first = {"id": 0, "zip": "00000", "score": 1.5, "ok": True, "vector": [0.0, 0.0]}
    producer.write(first, 60)  # the table exists from here on, its zip a text column
    config = TableKeys("docs").config
    wait_for(lambda: client.hget(config, CONFIG_COLUMNS), 60, "the table's columns published")
    assert json.loads(client.hget(config, CONFIG_COLUMNS) or b"{}") == KINDS
    path = tmp_path / "rows.csv"
    path.write_text(CSV)
    done = run_cli("produce", "--table", "docs", "--redis", redis_url, str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "written 2, rejected 0, failed 0" in done.stdout
    rows = lancedb.connect(db_uri).open_table("docs").to_arrow().to_pylist()
    assert sorted((row["id"], row["zip"], row["score"]) for row in rows) == [
        (0, "00000", 1.5),
        (1, "12345", 3.0),
        (2, "777", 4.5),
    ]


def test_a_writer_of_a_table_that_does_not_exist_drops_columns_an_earlier_table_left(
    writer_process: Callable[..., WriterProcess], client: redis.Redis
) -> None:
    config = TableKeys("docs").config
    client.hset(config, CONFIG_COLUMNS, json.dumps({"zip": "string"}))  # a table since gone
    writer_process("--coalesce-ms", "20")
    wait_for(lambda: client.hget(config, CONFIG_COLUMNS) is None, 60, "the old columns dropped")
