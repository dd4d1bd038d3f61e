"""Both producers behind one asyncio face, so that one test body checks each driver.

``Producer`` (threads) and ``AsyncProducer`` (the event loop) run the same core; a test of the
contract takes the ``made`` fixture and runs once per driver. The sync producer's calls run in
a thread (one may wait for room in its buffer), its futures are wrapped as asyncio futures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import pytest

from lancequeue.producer import AsyncProducer, Producer, WriteResult

DRIVERS = ("sync", "async")


class Driven:
    """One producer of either driver, called the same way."""

    def __init__(self, driver: str, redis_url: str, **settings: Any) -> None:
        self.driver = driver
        self.sync: Producer | None = None
        self.aio: AsyncProducer | None = None
        if driver == "sync":
            self.sync = Producer("docs", redis_url=redis_url, **settings)
        else:
            self.aio = AsyncProducer("docs", redis_url=redis_url, **settings)

    async def enqueue(
        self, record: Mapping[str, Any], timeout: float | None = None
    ) -> asyncio.Future[WriteResult]:
        if self.aio is not None:
            return await self.aio.enqueue(record, timeout)
        assert self.sync is not None
        return _wrap(await asyncio.to_thread(self.sync.enqueue, record, timeout))

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[asyncio.Future[WriteResult]]:
        if self.aio is not None:
            return await self.aio.enqueue_many(records, timeout)
        assert self.sync is not None
        made = await asyncio.to_thread(self.sync.enqueue_many, list(records), timeout)
        return [_wrap(future) for future in made]

    async def enqueue_each(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[asyncio.Future[WriteResult]]:
        """A plain loop of ``enqueue`` (the sync one in one thread of its own)."""
        if self.aio is not None:
            return [await self.aio.enqueue(record, timeout) for record in records]
        sync = self.sync
        assert sync is not None
        made = await asyncio.to_thread(lambda: [sync.enqueue(r, timeout) for r in records])
        return [_wrap(future) for future in made]

    async def enqueue_delete(
        self, key: Mapping[str, Any], timeout: float | None = None
    ) -> asyncio.Future[WriteResult]:
        if self.aio is not None:
            return await self.aio.enqueue_delete(key, timeout)
        assert self.sync is not None
        return _wrap(await asyncio.to_thread(self.sync.enqueue_delete, key, timeout))

    async def delete(self, key: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        if self.aio is not None:
            return await self.aio.delete(key, timeout)
        assert self.sync is not None
        return await asyncio.to_thread(self.sync.delete, key, timeout)

    async def write(self, record: Mapping[str, Any], timeout: float | None = None) -> WriteResult:
        if self.aio is not None:
            return await self.aio.write(record, timeout)
        assert self.sync is not None
        return await asyncio.to_thread(self.sync.write, record, timeout)

    async def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[WriteResult]:
        if self.aio is not None:
            return await self.aio.write_many(records, timeout)
        assert self.sync is not None
        return await asyncio.to_thread(self.sync.write_many, list(records), timeout)

    async def close(self, timeout: float | None = None) -> None:
        if self.aio is not None:
            await self.aio.close(timeout)
        else:
            assert self.sync is not None
            await asyncio.to_thread(self.sync.close, timeout)

    @property
    def outstanding(self) -> int:
        producer = self.aio or self.sync
        assert producer is not None
        return producer.outstanding


def _wrap(future: concurrent.futures.Future[WriteResult]) -> asyncio.Future[WriteResult]:
    """An asyncio future of the sync producer's future; settled at once if it is."""
    if not future.done():
        return asyncio.wrap_future(future)
    settled: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
    error = future.exception()
    if error is None:
        settled.set_result(future.result())
    else:
        settled.set_exception(error)
    return settled


MakeDriven = Callable[..., Driven]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(driver: str, redis_url: str) -> AsyncIterator[MakeDriven]:
    """Makes producers of this test's driver with the settings given; closes them all at the
    end (a failed test leaves no producer sending into the next)."""
    producers: list[Driven] = []

    def new(**settings: Any) -> Driven:
        producers.append(Driven(driver, redis_url, **settings))
        return producers[-1]

    try:
        yield new
    finally:
        for producer in producers:
            await producer.close(timeout=0)


@pytest.fixture
def made(make: MakeDriven) -> Driven:
    """A producer of each driver in turn, closed at the end."""
    return make()
