"""``lancequeue status``: a table, JSON, and --watch until Ctrl-C; what it shows, read from Redis
alone (``read_status``)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable

import redis

from lancequeue.cli.status import format_status
from lancequeue.common.keys import GROUP, TableKeys
from lancequeue.common.status import read_status
from lancequeue.producer import Producer
from tests.support import (
    INTERRUPTIBLE_CLI,
    WriterProcess,
    cli_env,
    record,
    run_cli,
    wait_for,
    writer_alive,
)

StartProcess = Callable[..., WriterProcess]


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
        *INTERRUPTIBLE_CLI,
        *("status", "--table", "docs", "--redis", redis_url, "--json", "--watch", "0.1"),
    ]
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


def test_the_oldest_entry_read_and_not_acked_is_shown_with_its_age(client: redis.Redis) -> None:
    stream = TableKeys("docs").stream
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    first = client.xadd(stream, {"rec": b"x"}, id="1700000000000-0")
    client.xadd(stream, {"rec": b"y"})
    client.xreadgroup(GROUP, "some-writer", {stream: ">"}, count=2)  # read, never acked
    status = read_status(client, "docs")
    assert status["pending"] == 2 and first == b"1700000000000-0"
    assert status["oldest_pending_ms"] == 1_700_000_000_000
    shown = format_status(status)
    assert "oldest pending" in shown and "s ago" in shown
    client.xack(stream, GROUP, first)
    assert read_status(client, "docs")["oldest_pending_ms"] > 1_700_000_000_000
