"""Several producer processes write one table through one writer process: each record lands once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import redis

from tests.support import (
    WriterProcess,
    cli_env,
    table_ids,
    wait_for,
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
