"""``lancequeue dlq``: the real CLI in a subprocess against dead letters put in the stream in
the documented shape (the writer's side of dead-lettering is tested with the writer)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import delete_entry_fields
from lancequeue.common.keys import TableKeys
from tests.support import (
    CLI,
    KEYS,
    StartWriter,
    cli_env,
    record,
    run_cli,
    stream_entry,
    table_ids,
)

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), 8)),
    ]
)
"""The table of ``tests.support.record``: 8-dim vectors."""
UNDECODABLE = b"\xc1"  # the one byte msgpack never uses


def add_dead_letter(
    client: redis.Redis,
    rec: bytes,
    *,
    reason: str = "SIGKILL: the writer died during the append",
    deliveries: int = 6,
    original_id: str = "1700000000000-0",
    delete: bool = False,
) -> str:
    """XADD a dead letter as the writer makes one: the original fields plus why and when
    (``delete``: of a delete by key, ``rec`` being the key)."""
    fields: dict[Any, Any] = stream_entry(KEYS.reply("a" * 32), 7, rec)
    if delete:
        entry = delete_entry_fields(KEYS.reply("a" * 32), 7, rec, 600_000)
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
    fields.update(
        reason=reason,
        deliveries=str(deliveries),
        original_id=original_id,
        dead_at_ms="1700000001000",
    )
    entry_id: Any = client.xadd(KEYS.dead_letters, fields)
    return str(entry_id.decode())


def dead_letter_ids(client: redis.Redis) -> list[str]:
    entries: Any = client.xrange(KEYS.dead_letters)
    return [entry_id.decode() for entry_id, _ in entries]


def dlq(redis_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``lancequeue dlq ARGS --table docs --redis URL`` in a subprocess."""
    full = ["dlq", *args, "--table", "docs", "--redis", redis_url]
    if stdin is None:
        return run_cli(*full)
    return subprocess.run(
        [*CLI, *full], input=stdin, capture_output=True, text=True, env=cli_env(), timeout=120
    )


def test_list_shows_each_dead_letter_with_its_origin_reason_size_and_a_record_preview(
    redis_url: str, client: redis.Redis
) -> None:
    rec = encode_record(record(1))
    first = add_dead_letter(client, rec, reason="OSError: disk full", original_id="5-1")
    second = add_dead_letter(client, UNDECODABLE, deliveries=9)
    result = dlq(redis_url, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{first}  original=5-1  deliveries=6  size={len(rec)}B")
    assert 'reason="OSError: disk full"' in lines[0]
    assert 'record={id: 1, text: "document 1", vector: <float32[8]>}' in lines[0]
    assert lines[1].startswith(f"{second}  original=1700000000000-0  deliveries=9  size=1B")
    assert "record=(undecodable record:" in lines[1]


def test_list_json_prints_one_json_object_per_dead_letter(
    redis_url: str, client: redis.Redis
) -> None:
    ids = [add_dead_letter(client, encode_record(record(i))) for i in range(3)]
    bad = add_dead_letter(client, UNDECODABLE)
    result = dlq(redis_url, "list", "--json", "--limit", "10")
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [item["id"] for item in shown] == [*ids, bad]
    assert shown[0]["deliveries"] == 6 and shown[0]["seq"] == 7
    assert shown[0]["original_id"] == "1700000000000-0"
    assert shown[0]["dead_at_ms"] == 1700000001000
    assert shown[0]["reason"] == "SIGKILL: the writer died during the append"
    assert shown[0]["reply"] == KEYS.reply("a" * 32)
    assert shown[0]["preview"].startswith("{id: 0, ") and shown[0]["record_error"] is None
    assert shown[3]["preview"] is None and "undecodable" in shown[3]["record_error"]


def test_list_stops_at_the_limit_and_says_how_many_there_are(
    redis_url: str, client: redis.Redis
) -> None:
    ids = [add_dead_letter(client, encode_record(record(i))) for i in range(3)]
    result = dlq(redis_url, "list", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ids[:2]
    assert "showing 2 of 3" in result.stderr


def test_list_of_a_table_without_dead_letters_says_so_and_exits_zero(redis_url: str) -> None:
    result = dlq(redis_url, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no dead letters for table 'docs'"
    assert dlq(redis_url, "list", "--json").stdout == ""


async def test_replay_writes_the_records_deletes_their_dead_letters_and_leaves_bad_ones_with_why(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=20)
    add_dead_letter(client, encode_record(record(1)))
    add_dead_letter(client, encode_record(record(2)))
    short_vector = {"id": 3, "text": "short", "vector": np.ones(3, np.float32)}
    rejected = add_dead_letter(client, encode_record(short_vector))
    undecodable = add_dead_letter(client, UNDECODABLE)
    result = await asyncio.to_thread(dlq, redis_url, "replay", "--all", "--timeout-ms", "30000")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == "written 2, failed 2"
    assert f"{rejected}: RecordRejected:" in result.stderr and "vector" in result.stderr
    assert f"{undecodable}: not sent: undecodable record" in result.stderr
    assert table_ids(db_uri) == [1, 2]
    assert dead_letter_ids(client) == [rejected, undecodable]


async def test_replay_sends_dead_lettered_deletes_as_deletes_in_their_order(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    start_writer(delete_key="id", schema=SCHEMA, coalesce_ms=20)
    first = add_dead_letter(client, encode_record(record(1)))
    add_dead_letter(client, encode_record(record(2)))
    delete = add_dead_letter(client, encode_record({"id": 2}), delete=True)
    add_dead_letter(client, encode_record(record(3)))
    listed = dlq(redis_url, "list", "--json")
    shown = {info["id"]: info for info in map(json.loads, listed.stdout.splitlines())}
    assert shown[delete]["delete"] and shown[delete]["preview"] == "delete {id: 2}"
    assert not shown[first]["delete"] and shown[first]["record_error"] is None
    result = await asyncio.to_thread(dlq, redis_url, "replay", "--all", "--timeout-ms", "30000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "written 4, failed 0"
    assert table_ids(db_uri) == [1, 3]  # record 2, then its delete: applied after it
    assert dead_letter_ids(client) == []


async def test_replay_of_named_ids_sends_only_those_and_exits_zero_when_all_are_written(
    start_writer: StartWriter, redis_url: str, client: redis.Redis, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=20)
    ids = [add_dead_letter(client, encode_record(record(i))) for i in range(4)]
    result = await asyncio.to_thread(dlq, redis_url, "replay", ids[3], ids[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "written 2, failed 0"
    assert table_ids(db_uri) == [1, 3]
    assert dead_letter_ids(client) == [ids[0], ids[2]]


def test_replay_without_a_writer_answering_leaves_the_dead_letters_as_not_written_and_exits_1(
    redis_url: str, client: redis.Redis
) -> None:
    entry_id = add_dead_letter(client, encode_record(record(1)))
    result = dlq(redis_url, "replay", "--all", "--timeout-ms", "300", "--answer-grace-ms", "200")
    assert result.returncode == 1
    assert result.stdout.strip() == "written 0, failed 1"
    # Unanswered by its deadline plus the grace: not written, so replaying it again is safe.
    assert f"{entry_id}: WriteTimeout: " in result.stderr
    assert "abandoned it before any writer claimed it" in result.stderr
    assert dead_letter_ids(client) == [entry_id]


def test_replay_refuses_a_negative_answer_grace(redis_url: str, client: redis.Redis) -> None:
    entry_id = add_dead_letter(client, encode_record(record(1)))
    result = dlq(redis_url, "replay", "--all", "--answer-grace-ms", "-1")
    assert result.returncode == 2 and "--answer-grace-ms" in result.stderr
    assert dead_letter_ids(client) == [entry_id]


def test_replay_needs_ids_or_all_but_not_both(redis_url: str, client: redis.Redis) -> None:
    entry_id = add_dead_letter(client, encode_record(record(1)))
    neither = dlq(redis_url, "replay")
    assert neither.returncode == 2
    assert "give the IDs of the dead letters, or --all" in neither.stderr
    both = dlq(redis_url, "replay", entry_id, "--all")
    assert both.returncode == 2 and "not both" in both.stderr
    assert dead_letter_ids(client) == [entry_id]


def test_an_unknown_or_malformed_id_is_named_and_nothing_is_done(
    redis_url: str, client: redis.Redis
) -> None:
    entry_id = add_dead_letter(client, encode_record(record(1)))
    unknown = dlq(redis_url, "purge", "--yes", entry_id, "1-999")
    assert unknown.returncode == 1
    assert "no dead letter of table 'docs' with id 1-999" in unknown.stderr
    malformed = dlq(redis_url, "replay", "latest")
    assert malformed.returncode == 1 and "not a stream id" in malformed.stderr
    assert "'latest'" in malformed.stderr
    assert dead_letter_ids(client) == [entry_id]


def test_a_bad_table_name_is_named_in_the_error(redis_url: str) -> None:
    result = run_cli("dlq", "list", "--table", "no/slashes", "--redis", redis_url)
    assert result.returncode == 1
    assert "invalid table name 'no/slashes'" in result.stderr


def test_purge_with_yes_deletes_the_named_dead_letters(redis_url: str, client: redis.Redis) -> None:
    ids = [add_dead_letter(client, encode_record(record(i))) for i in range(3)]
    result = dlq(redis_url, "purge", "--yes", ids[0], ids[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deleted 2 dead letter(s)"
    assert dead_letter_ids(client) == [ids[1]]


def test_purge_all_asks_and_deletes_everything_on_yes(redis_url: str, client: redis.Redis) -> None:
    for i in range(3):
        add_dead_letter(client, encode_record(record(i)))
    other_table = TableKeys("other").dead_letters
    client.xadd(other_table, {"reason": "not ours"})
    result = dlq(redis_url, "purge", "--all", stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert "Delete 3 dead letter(s) of table 'docs' for good?" in result.stdout
    assert "deleted 3 dead letter(s)" in result.stdout
    assert dead_letter_ids(client) == []
    assert client.xlen(other_table) == 1


def test_purge_without_yes_deletes_nothing_when_the_answer_is_no(
    redis_url: str, client: redis.Redis
) -> None:
    ids = [add_dead_letter(client, encode_record(record(i))) for i in range(2)]
    result = dlq(redis_url, "purge", "--all", stdin="n\n")
    assert result.returncode == 1
    assert "nothing deleted" in result.stdout
    assert dead_letter_ids(client) == ids
