"""Fixtures: a real redis-server per test session, a real LanceDB directory per test."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from lancequeue.common import embedded_redis
from lancequeue.producer import AsyncProducer, Producer
from lancequeue.writer import Writer
from tests import fault_points  # noqa: F401 - the writers run in this process get them too
from tests.support import WriterProcess, cli_env, free_port, wait_for

pytest_plugins = ["tests.drivers"]  # the fixtures of tests run once per producer driver


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A redis-server of the tests' own on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [
            embedded_redis.redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 15, "the test redis-server")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(15)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as conn:
        yield conn


@pytest.fixture
def db_uri(tmp_path: Path) -> str:
    return str(tmp_path / "db")


@pytest.fixture
async def start_writer(redis_url: str, db_uri: str) -> AsyncIterator[Callable[..., Writer]]:
    """Start in-process writers (``run()`` as a task); all are stopped at teardown."""
    running: list[tuple[Writer, asyncio.Task[None]]] = []

    def start(**settings: Any) -> Writer:
        settings.setdefault("table", "docs")
        settings.setdefault("redis_url", redis_url)
        settings.setdefault("db_uri", db_uri)
        writer = Writer(**settings)
        running.append((writer, asyncio.create_task(writer.run())))
        return writer

    yield start
    for writer, task in running:
        await writer.stop()
        await task  # re-raises if run() crashed


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    with Producer("docs", redis_url=redis_url) as made:
        yield made


@pytest.fixture
async def async_producer(redis_url: str) -> AsyncIterator[AsyncProducer]:
    async with AsyncProducer("docs", redis_url=redis_url) as made:
        yield made


@pytest.fixture
def writer_process(
    redis_url: str, db_uri: str, tmp_path: Path
) -> Iterator[Callable[..., WriterProcess]]:
    """Start ``lancequeue writer`` subprocesses; killed at teardown if still running."""
    started: list[WriterProcess] = []

    def start(
        *args: str, table: str = "docs", env_extra: dict[str, str] | None = None
    ) -> WriterProcess:
        env = cli_env(
            LANCEQUEUE_REDIS=redis_url,
            LANCEQUEUE_DB=db_uri,
            LANCEQUEUE_TABLE=table,
            **(env_extra or {}),
        )
        process = WriterProcess(list(args), tmp_path / f"writer-{len(started)}.log", env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
