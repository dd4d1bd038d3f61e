"""Nothing serving a table is said at once: a producer logs one warning as it connects, ``produce``
prints one line on stderr, ``status`` exits 1; ``status`` with no ``--table`` lists the tables
Redis holds. (Before, a mistyped table name waited out every record's timeout in silence.)"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import CONFIG_WRITER_UNTIL
from lancequeue.producer.liveness import writer_live
from lancequeue.writer import Writer
from tests.drivers import MakeDriven
from tests.support import CLI, cli_env, record, run_cli, wait_for

NO_WRITER = "no writer is serving table 'docs'"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("no writer")]


async def _until(condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # poll: the condition is read from Redis or the logs


async def test_a_producer_warns_once_that_no_writer_serves_its_table_and_not_when_one_does(
    make: MakeDriven,
    start_writer: Callable[..., Writer],
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="lancequeue")
    alone = make()
    waiting = await alone.enqueue_many([record(i) for i in range(3)])
    await _until(lambda: _warnings(caplog), "the warning")
    await alone.enqueue_many([record(i) for i in range(3, 6)])
    assert _warnings(caplog) == [
        f"{NO_WRITER}: records wait in Redis until one starts (`lancequeue writer --table docs`),"
        " and fail at their deadline if none does; check the table name (`lancequeue status`"
        " lists the tables Redis holds)"
    ]

    writer = start_writer(coalesce_ms=20)
    config = TableKeys("docs").config
    await _until(lambda: client.hget(config, CONFIG_WRITER_UNTIL), "the writer's renewal")
    await asyncio.wait_for(asyncio.gather(*waiting), 60)  # what waited is written now
    caplog.clear()
    served = make()
    await served.write(record(10), 60)
    assert _warnings(caplog) == []

    await writer.stop()  # a clean stop says no writer serves the table any more
    assert client.hget(config, CONFIG_WRITER_UNTIL) is None
    after = make()
    await after.enqueue(record(11))
    await _until(lambda: _warnings(caplog), "the warning after the writer stopped")


def test_produce_says_at_once_on_stderr_that_no_writer_serves_a_mistyped_table(
    redis_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "records.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "a", "vector": [1.0, 2.0]}) + "\n")
    command = [*CLI, "produce", "--table", "doc", "--redis", redis_url, str(source)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=cli_env()) as done:
        try:
            assert done.stderr is not None
            line = done.stderr.readline()  # the first line, long before the record's deadline
            assert "no writer is serving table 'doc'" in line and line.count("\n") == 1
        finally:
            done.kill()


def test_status_exits_1_when_no_writer_serves_and_lists_every_table_without_table(
    redis_url: str, client: redis.Redis, writer_process: Callable[..., object]
) -> None:
    client.hset(TableKeys("events").config, "max_batch", 128)  # a table nobody serves now
    shown = run_cli("status", "--table", "docs", "--redis", redis_url)
    assert shown.returncode == 1 and NO_WRITER in shown.stderr

    listed = run_cli("status", "--redis", redis_url, "--json")
    assert listed.returncode == 1  # none of them is served
    assert [status["table"] for status in json.loads(listed.stdout)] == ["events"]

    writer_process("--coalesce-ms", "20")
    wait_for(lambda: client.hget(TableKeys("docs").config, CONFIG_WRITER_UNTIL), 60, "a writer")
    assert run_cli("status", "--table", "docs", "--redis", redis_url).returncode == 0
    listed = run_cli("status", "--redis", redis_url)
    assert listed.returncode == 0, listed.stderr
    assert "docs" in listed.stdout and "events" in listed.stdout
    assert "alive" in listed.stdout and "not running" in listed.stdout


@pytest.mark.parametrize(
    ("until", "now", "live"),
    [
        (None, (1000, 0), False),  # no writer ever, or one that stopped cleanly
        (b"1000999", (1000, 0), True),
        (b"1000000", (1000, 0), False),  # its lease ran out: it died or hangs
        (b"1000999", {"node-1": (1000, 0)}, True),  # TIME as a cluster client answers it
        (b"not a number", (1000, 0), False),
    ],
)
def test_a_writer_is_live_while_its_published_lease_is_ahead_of_redis_time(
    until: bytes | None, now: object, live: bool
) -> None:
    assert writer_live(until, now) is live
