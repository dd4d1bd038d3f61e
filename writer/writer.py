"""The writer: the one process that owns a table and appends coalesced batches to it.

Its life, in order: connect to Redis; take the table's lease (standing by while another writer
holds it); only then open the table, fence it and read what the writers before left
(``serving.TableServer.open``); serve until stopped or replaced; record the stop. Every wait
on Redis along the way rides out lost connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError, WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    CONFIG_COLUMNAR_BATCH,
    CONFIG_MAX_BATCH,
    CONFIG_MAX_QUEUE_SIZE,
    CONFIG_PROTOCOL,
    CONFIG_UPSERT_KEY,
    HIGHEST_VERSION,
)
from lancequeue.common.redis_client import (
    REDIS_FAILURES,
    AsyncRedis,
    async_client,
    is_cluster_url_async,
)
from lancequeue.common.redis_tls import RedisTlsError
from lancequeue.common.redis_url import redact_url
from lancequeue.writer.lease import Lease
from lancequeue.writer.loading import load_object
from lancequeue.writer.metrics import TableMetrics, WriterMetrics
from lancequeue.writer.retrying import RedisGaveUp
from lancequeue.writer.schema_inference import resolve_schema
from lancequeue.writer.serving import TableServer
from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.shutdown import Shutdown
from lancequeue.writer.summary import Summary

logger = logging.getLogger(__name__)


class Writer:
    """Owns one LanceDB table: reads the table's stream, appends one batch per flush, acks and
    answers every record.

    Embed it in asyncio code::

        writer = Writer(table="docs", redis_url="redis://localhost:6379", db_uri="./db")
        task = asyncio.create_task(writer.run())
        ...
        await writer.stop()     # flushes what is in hand, acks, answers

    A second writer for the same table stands by until the first one's lease expires, then
    takes over: it fences the table and replays what the first left pending, writing none of
    it twice.
    """

    def __init__(
        self,
        settings: WriterSettings | None = None,
        metrics: WriterMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings if settings is not None else WriterSettings(**kwargs)
        # Shared by the writers of one process; else its own if metrics_port is set.
        self._shared_metrics = metrics
        self.keys = TableKeys(self.settings.table)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._on_flushed = _resolve_hook(self.settings.on_flushed)
        self._schema = resolve_schema(self.settings.schema)
        self._shutdown = Shutdown()
        self._running = False
        self._finished = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()`` (or, with ``burst``, until the queue is empty): on return,
        every record read was flushed, acked and answered.

        Raises ``WriterReplaced`` if another writer took the table over while this one stalled.
        """
        self._finished.clear()
        self._running = True
        settings = self.settings
        own_metrics: WriterMetrics | None = None
        url: str | None = None
        try:
            url = await asyncio.to_thread(
                resolve_redis_url, settings.redis_url, settings.resolved_data_dir, True
            )
            cluster = await is_cluster_url_async(url)
            redis = async_client(url, cluster)
            try:
                metrics: TableMetrics | None = None
                if self._shared_metrics is not None:
                    metrics = self._shared_metrics.table(settings.table, url, cluster)
                elif settings.metrics_port:
                    own_metrics = WriterMetrics()
                    metrics = own_metrics.table(settings.table, url, cluster)
                    own_metrics.serve(settings.metrics_host, settings.metrics_port)
                published: dict[str, int | str] = {
                    CONFIG_MAX_QUEUE_SIZE: settings.max_queue_size,
                    CONFIG_MAX_BATCH: settings.max_batch,
                    CONFIG_COLUMNAR_BATCH: settings.max_batch,
                    CONFIG_PROTOCOL: int(HIGHEST_VERSION),
                    CONFIG_UPSERT_KEY: ",".join(settings.upsert_key),
                }
                lease = Lease(redis, self.keys, self.consumer, settings.lease_ms, published)
                # A burst does not stand by: a live writer serves the queue already.
                if await lease.acquire(self._shutdown.requested, stand_by=not settings.burst):
                    await self._hold(redis, lease, metrics)
            finally:
                await redis.aclose()
        except (AuthenticationError, NoPermissionError) as exc:
            raise ConfigError(f"redis refused the writer: {exc} (check its ACL user)") from exc
        except RedisTlsError as exc:
            raise (exc.at(redact_url(url)) if url else exc) from exc.__cause__
        finally:
            self._running = False
            if own_metrics is not None:
                own_metrics.close()
            self._finished.set()
        if self._shutdown.replaced:
            raise WriterReplaced(
                f"another writer took table {settings.table!r} over while {self.consumer} "
                "stalled; it stopped without flushing (its entries stay pending)"
            )
        logger.info("writer %s stopped", self.consumer)

    async def _hold(self, redis: AsyncRedis, lease: Lease, metrics: TableMetrics | None) -> None:
        """Serve the table while holding ``lease``, renewing it; release it at the end."""
        settings = self.settings
        renewing = asyncio.Event()
        renewer = asyncio.create_task(lease.keep(renewing, self._shutdown), name="lancequeue-lease")
        summaries: asyncio.Task[None] | None = None
        server: TableServer | None = None
        try:
            server = await TableServer.open(
                settings, redis, lease, self._schema, self._shutdown, metrics, self._on_flushed
            )
            logger.info(
                "writer %s serving table %r (token %d, coalesce %d ms, max batch %d)",
                self.consumer,
                settings.table,
                lease.token,
                settings.coalesce_ms,
                settings.max_batch,
            )
            summaries = asyncio.create_task(
                _log_summaries(server.summary, settings.summary_every_s, settings.table),
                name="lancequeue-summary",
            )
            if metrics is not None:
                metrics.lease_held(True)
            await server.serve()
        except WriterReplaced as exc:
            self._shutdown.replace(exc)
        except RedisGaveUp as exc:
            logger.error(
                "stopping while Redis fails (%s): entries not acked stay pending for the next "
                "writer",
                exc,
            )
        finally:
            if summaries is not None:
                summaries.cancel()  # it only logs: no Redis call to interrupt
            if metrics is not None:
                metrics.lease_held(False)
            # Not cancel(): a cancellation landing inside a redis-py call can be swallowed,
            # leaving the task alive forever.
            renewing.set()
            await renewer
            if not self._shutdown.replaced:
                await self._retire(lease, server)

    def request_stop(self) -> None:
        """Ask ``run()`` to stop reading, flush what it holds, and return (warm stop)."""
        self._shutdown.request()

    async def stop(self) -> None:
        """Warm stop, waiting until ``run()`` has returned. Idempotent."""
        self.request_stop()
        if self._running:
            await self._finished.wait()

    async def _retire(self, lease: Lease, server: TableServer | None) -> None:
        try:
            if server is not None:
                await server.retire()
            await lease.release()
        except REDIS_FAILURES as exc:
            logger.warning("could not record the stop in redis: %s", exc)


async def _log_summaries(summary: Summary, interval_s: int, table: str) -> None:
    """Every ``interval_s``, one log line of what the writer did meanwhile, if anything."""
    if not interval_s:
        return
    while True:
        await asyncio.sleep(interval_s)  # a reporting period, not a synchronisation
        line = summary.line()
        if line is not None:
            logger.info("table %r: %s", table, line)


def _resolve_hook(hook: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    if hook is None or callable(hook):
        return hook
    loaded = load_object(hook, "--on-flushed")
    if not callable(loaded):
        raise ConfigError(f"--on-flushed {hook!r} is not callable")
    return loaded  # type: ignore[no-any-return]
