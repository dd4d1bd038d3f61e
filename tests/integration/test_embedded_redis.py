"""With no Redis URL: the writer starts the embedded server of its data directory and producers
use it; a producer never starts one."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from lancequeue.common import embedded_redis
from lancequeue.common.errors import RedisUnavailable
from lancequeue.producer import AsyncProducer, Producer
from tests.support import (
    CLI,
    WRITTEN,
    WriterProcess,
    cli_env,
    record,
    table_ids,
    wait_for,
    wait_until_pending,
    writer_alive,
)


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
                    assert future.result(timeout=60) == WRITTEN
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
