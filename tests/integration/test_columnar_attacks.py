"""Red-team pass on columnar entries, answers in ranges and the pipelined append.

Each test is an attempt to break a promise of README.md / PROTOCOL.md: a hostile ``cols`` body
(built by hand, pushed with XADD or through the enqueue script), mixed-version replies, and the
ordering of commits and answers in ``FlushPipeline``. How a columnar entry builds against its
records one by one is ``test_columnar_builds.py``; forged replies, ``unit/test_forged_replies.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pytest
import redis

from lancequeue.common.codec import encode_record, packb
from lancequeue.common.columns import encode_columns, encode_fields
from lancequeue.common.entries import columnar_entry_fields, entry_fields
from lancequeue.common.errors import RecordRejected
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import ENQUEUE_SCRIPT, PACKED_ENTRY_WIDTH, RANGED_VERSION
from lancequeue.common.replies import record_digest
from tests.support import (
    KEYS,
    StartWriter,
    as_entry,
    async_wait_for,
    pop_answers,
    record,
    table_ids,
    writer_serving,
)

pytestmark = pytest.mark.timeout(120)


SLOW_HOOK_S = 0.3


def columnar(
    body: bytes, count: int, reply: str = KEYS.reply("p1"), seq: int = 1, version: bytes = b"1"
) -> dict[bytes, bytes]:
    return as_entry(columnar_entry_fields(reply, seq, count, body, 600_000, version))


_AMPLIFICATION = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, pyarrow as pa
    from lancequeue.common.codec import packb
    from lancequeue.common.keys import TableKeys
    from lancequeue.common.entries import columnar_entry_fields
    from lancequeue.writer.arrow_batch import BatchBuilder
    from lancequeue.writer.entries import read_entries

    keys = TableKeys("docs")
    count, columns = 65536, int(sys.argv[1])
    builder = BatchBuilder(pa.schema([pa.field("id", pa.int64())]))

    def build(cols):
        body = packb(cols)
        fields = columnar_entry_fields(keys.reply("p1"), 1, count, body, 600000)
        entry = {
            (k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
            for k, v in zip(fields[::2], fields[1::2])
        }
        started = time.monotonic()
        table, rejected = builder.build_rows(read_entries(keys, b"1-0", entry))
        return len(body), time.monotonic() - started

    ids = np.arange(count, dtype="<i8")
    honest_bytes, honest_s = build({"id": ids})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    empty = np.zeros((count, 0), dtype="|u1")  # 0 bytes of data, one row per record
    hostile = {"id": ids, **{f"c{i}": empty for i in range(columns)}}
    hostile_bytes, hostile_s = build(hostile)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    print(json.dumps({"honest_bytes": honest_bytes, "honest_s": honest_s,
                      "hostile_bytes": hostile_bytes, "hostile_s": hostile_s, "grown_mb": grown}))
    """
)


SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), 8)),
    ]
)


GOOD = KEYS.reply("good")


EVIL = KEYS.reply("evil")


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _hostile_bodies() -> list[tuple[int, bytes]]:
    """(n, cols) pairs no record of which fits SCHEMA; some cannot even be read."""
    f4 = "<f4"
    return [
        (3, b"\xc1"),
        (2, msgpack.packb([1, 2])),
        (3, packb({"id": [1000, 1001]})),
        (2, packb({"id": 5})),
        (2, msgpack.packb({1: [1000, 1001]}, strict_types=False)),
        (1, packb({"id": np.array(1000)})),
        (3, packb({"id": np.arange(2, dtype="<i8")})),
        (2, packb({"id": [1000, 1001], "vector": np.full((2, 8), np.nan, f4)})),
        (2, packb({"id": [1002, 1003], "vector": np.ones((2, 4), f4)})),
        (1, packb({"id": [1004], "vector": np.ones((1, 8), "<c8")})),
        (2, packb({"id": [True, False]})),
        (2, packb({"id": [2**64 - 1, 2**63]})),
        (2, packb({"id": [None, None]})),
        (2, packb({"text": ["a", "b"]})),
        (2, packb({"id": [1010, 1011], "text": [b"bytes", b"x"]})),
        (1, packb({"id": [1012], "zz": ["x"]})),
        (1, packb({"id": [1013], "text": [_deep(40)]})),
        (300, packb({})),
        (
            2,
            msgpack.packb(
                {"id": [1020, 1021], "text": [msgpack.Timestamp(0, 1), 5]}, datetime=False
            ),
        ),
        (2, packb({"id": np.array([1.5, 2.5], "<f8")})),
        (2, packb({"id": np.array([1030, 1031], "<u8"), "vector": np.full((2, 8), 1e300)})),
        (2, packb({"id": np.array([1040, 1041], "<i8"), "vector": np.ones((2, 8, 1), f4)})),
        (2, packb({"id": [1050, 1051], "vector": [[0.5] * 7, [0.5] * 7 + [True]]})),
        (2, packb({"id": [1060, 1061], "text": [1, 2.5]})),
        (65536, packb({"id": [1]})),
    ]


def test_a_few_bytes_of_columnar_body_never_cost_the_writer_seconds_or_gigabytes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _AMPLIFICATION, "100"],
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    extra_bytes = measured["hostile_bytes"] - measured["honest_bytes"]
    assert extra_bytes < 4096, measured  # the attack is cheap: a few KB
    assert measured["hostile_s"] < 3 * measured["honest_s"] + 1.0, measured
    assert measured["grown_mb"] < 300, measured


async def test_hostile_columnar_entries_never_cost_other_entries_of_their_batch(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    good_records = [record(i) for i in range(1, 4)]
    columnar_good = [record(i) for i in range(10, 14)]
    good_body = encode_columns([encode_fields(r) for r in columnar_good])
    expected: dict[str, dict[int, bytes | None]] = {"good": {}, "evil": {}}
    with client.pipeline() as pipe:  # one backlog: all of it in one batch
        pipe.xadd(
            KEYS.stream, as_entry(entry_fields(GOOD, 1, encode_record(good_records[0]), 600_000))
        )  # type: ignore[arg-type]
        seq = 1
        for position, (count, body) in enumerate(_hostile_bodies()):
            version = RANGED_VERSION if position % 2 else b"1"
            pipe.xadd(KEYS.stream, columnar(body, count, EVIL, seq, version))  # type: ignore[arg-type]
            expected["evil"].update(dict.fromkeys(range(seq, seq + count)))
            seq += count
            if position == 7:  # good entries between hostile ones
                pipe.xadd(KEYS.stream, columnar(good_body, 4, GOOD, 10, RANGED_VERSION))  # type: ignore[arg-type]
        for i, good in enumerate(good_records[1:], start=2):
            pipe.xadd(KEYS.stream, as_entry(entry_fields(GOOD, i, encode_record(good), 600_000)))  # type: ignore[arg-type]
        pipe.execute()
    expected["good"] = {i: record_digest(encode_record(r)) for i, r in enumerate(good_records, 1)}
    expected["good"].update(dict.fromkeys(range(10, 14), record_digest(good_body)))

    start_writer(schema=SCHEMA, coalesce_ms=20, max_batch=70_000, max_queue_size=140_000)
    good = await asyncio.to_thread(pop_answers, client, GOOD, len(expected["good"]), 60)
    evil = await asyncio.to_thread(pop_answers, client, EVIL, len(expected["evil"]), 60)
    assert {seq: (r.error, r.digest) for seq, r in good.items()} == {
        seq: (None, digest) for seq, digest in expected["good"].items()
    }
    assert sorted(evil) == sorted(expected["evil"])
    wrong = {seq: r for seq, r in evil.items() if not isinstance(r.error, RecordRejected)}
    assert wrong == {}
    assert table_ids(db_uri) == [1, 2, 3, 10, 11, 12, 13]

    # The writer still serves: one more entry lands.
    client.xadd(KEYS.stream, columnar(good_body, 4, GOOD, 20, RANGED_VERSION))  # type: ignore[arg-type]
    more = await asyncio.to_thread(pop_answers, client, GOOD, 4, 30)
    assert all(result.error is None for result in more.values())
    assert await asyncio.to_thread(lambda: int(client.get(KEYS.queued) or 0)) == 0


async def test_a_columnar_entry_pushed_through_the_enqueue_script_is_answered_per_record(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    start_writer(schema=SCHEMA, coalesce_ms=20)
    await writer_serving(client)
    keys = TableKeys("docs")
    bad = packb({"id": [1, 2]})  # 2 values for 5 records
    good = encode_columns([encode_fields(record(i)) for i in (7, 8)])
    argv: list[Any] = [4096, PACKED_ENTRY_WIDTH, keys.pushed_channel]
    argv += columnar_entry_fields(EVIL, 1, 5, bad, 600_000, RANGED_VERSION)
    argv += columnar_entry_fields(EVIL, 6, 2, good, 600_000, RANGED_VERSION)
    pushed = client.eval(
        ENQUEUE_SCRIPT, 4, keys.inbox, keys.config, keys.queued, keys.inboxed, *argv
    )
    assert pushed == [5, 2]
    results = await asyncio.to_thread(pop_answers, client, EVIL, 7, 30)
    assert all(isinstance(results[seq].error, RecordRejected) for seq in range(1, 6))
    assert "holds 2 values for 5 records" in str(results[3].error)
    assert results[6].error is None and results[7].digest == record_digest(good)
    assert table_ids(db_uri) == [7, 8]
    await async_wait_for(
        lambda: asyncio.to_thread(
            lambda: (
                int(client.get(keys.queued) or 0) == 0 and int(client.get(keys.inboxed) or 0) == 0
            )
        ),
        what="the queue counts back at 0",
    )


async def test_a_bare_version_1_producer_and_a_version_2_one_in_one_batch_each_get_their_form(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    bare, ranged = KEYS.reply("bare"), KEYS.reply("ranged")
    body = encode_columns([encode_fields(record(i)) for i in (20, 21, 22)])
    rec = encode_record(record(1))
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, as_entry(entry_fields(bare, 1, rec, 600_000)))  # type: ignore[arg-type]
        pipe.xadd(KEYS.stream, columnar(body, 3, ranged, 20, RANGED_VERSION))  # type: ignore[arg-type]
        pipe.xadd(KEYS.stream, columnar(body, 3, bare, 2, b"1"))  # type: ignore[arg-type]
        pipe.execute()
    start_writer(coalesce_ms=20)
    popped = await asyncio.to_thread(client.blpop, [bare], 30)
    assert popped is not None
    digest = record_digest(body)
    assert msgpack.unpackb(popped[1]) == [
        [1, None, record_digest(rec)],
        [2, None, digest],
        [3, None, digest],
        [4, None, digest],
    ]
    popped = await asyncio.to_thread(client.blpop, [ranged], 30)
    assert popped is not None
    ranges = msgpack.unpackb(popped[1])
    assert ranges == {"ok": [[20, 22, digest]], "errors": [], "version": ranges["version"]}
    assert isinstance(ranges["version"], int) and ranges["version"] > 0


async def test_another_client_s_version_2_entry_never_changes_a_version_1_producer_s_replies(
    start_writer: StartWriter, client: redis.Redis
) -> None:
    victim = KEYS.reply("victim")
    rec = encode_record(record(1))
    body = encode_columns([encode_fields(record(500))])
    with client.pipeline() as pipe:
        pipe.xadd(KEYS.stream, as_entry(entry_fields(victim, 1, rec, 600_000)))  # type: ignore[arg-type]
        pipe.xadd(KEYS.stream, columnar(body, 1, victim, 2, RANGED_VERSION))  # type: ignore[arg-type]
        pipe.execute()
    start_writer(coalesce_ms=20)
    popped = await asyncio.to_thread(client.blpop, [victim], 30)
    assert popped is not None
    reply = msgpack.unpackb(popped[1])
    assert isinstance(reply, list), f"a version-1 producer got {reply!r:.200}"


async def test_while_answers_are_slow_at_most_the_next_batch_is_committed_early(
    start_writer: StartWriter, client: redis.Redis, db_uri: str
) -> None:
    """Live: the writer's on_flushed hook runs in the answer lane before a batch's ack; while it
    is slow, the next batch may commit (its watermark lists the slow batch's answers), but no
    batch after that."""
    seen: list[tuple[list[int], list[int]]] = []

    async def slow_hook(records: list[dict[str, Any]]) -> None:
        await asyncio.sleep(SLOW_HOOK_S)  # a hook that takes this long: what the test is about
        in_table = await asyncio.to_thread(table_ids, db_uri)
        seen.append(([r["id"] for r in records], in_table))

    with client.pipeline() as pipe:
        pipe.xadd(
            KEYS.stream,
            as_entry(entry_fields(KEYS.reply("p"), 0, encode_record(record(0)), 600_000)),
        )  # type: ignore[arg-type]
        for i in range(1, 16):
            rec = encode_record(record(i))
            pipe.xadd(KEYS.stream, as_entry(entry_fields(KEYS.reply("p"), i, rec, 600_000)))  # type: ignore[arg-type]
        pipe.execute()
    start_writer(coalesce_ms=10, max_batch=3, on_flushed=slow_hook)
    results = await asyncio.to_thread(pop_answers, client, KEYS.reply("p"), 16, 60)
    assert all(result.error is None for result in results.values())
    batches = [batch for batch, _ in seen]
    assert [i for batch in batches for i in batch] == list(range(16))  # in stream order
    for index, (batch, in_table) in enumerate(seen):
        allowed = {i for done in batches[: index + 2] for i in done}  # up to the next batch
        assert set(in_table) <= allowed, (batch, in_table)
    assert table_ids(db_uri) == list(range(16))
