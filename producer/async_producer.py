"""The asyncio producer: :class:`~lancequeue.producer.core.ProducerCore` run as three tasks on
the event loop (sender, reply listener, abandoner); the same contract as
:class:`~lancequeue.producer.Producer`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import LancequeueError, ProducerClosed
from lancequeue.common.protocol import ABANDON_SCRIPT, ENQUEUE_SCRIPT, encode_results
from lancequeue.common.redis_client import (
    REDIS_FAILURES,
    AsyncRedis,
    async_client,
    is_cluster_url_async,
)
from lancequeue.producer.calls import REPLY_BLOCK_S, Call, Op, Steps, resume
from lancequeue.producer.commands import redis_commands
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.outbox import ABANDON_ATTEMPT_S, REPLY_INFLIGHT_TTL_MS, Outgoing
from lancequeue.producer.settings import ProducerSettings

logger = logging.getLogger(__name__)

AsyncFuture = asyncio.Future[None]


class AsyncProducer:
    """Sends records to a table's writer through Redis, for asyncio code::

        async with AsyncProducer("docs") as producer:
            future = await producer.enqueue({"id": 1, "vector": vector})
            await future                      # the record is in the table
            await producer.write({"id": 2, "vector": vector})   # the same, in one call

    ``enqueue`` encodes the record, puts it in a bounded buffer and returns its future at once;
    a background task sends what has accumulated while its previous send was in flight. It
    awaits only while the buffer is full (the table's queue is full, or Redis unreachable),
    until the record's deadline (the call's time plus its timeout). A future resolves by the
    deadline plus ``answer_grace_ms`` (plus a second if Redis hangs), unless a writer claimed
    its record first: it then waits for that writer's answer (see ``Producer``).
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        core: ProducerCore[AsyncFuture] = ProducerCore(self.settings, _resolve_ok, _resolve_error)
        self._core = core
        self.keys = core.keys
        self.producer_id = core.outbox.producer_id
        self._redis: AsyncRedis | None = None
        self._replies: AsyncRedis | None = None
        self._abandoner: AsyncRedis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._buffered = asyncio.Event()  # the sender may have work
        self._room = asyncio.Event()  # records left the buffer
        core.buffer.on_buffered = self._buffered.set
        core.buffer.on_room = self._room.set
        self._due = asyncio.Event()
        core.on_due = self._due.set
        self._closed = False
        self._close_done = asyncio.Event()
        self._stopping = asyncio.Event()  # ends the listener's pauses
        self._start_lock = asyncio.Lock()
        self._ops: dict[Op, Callable[..., Awaitable[Any]]] = {
            Op.WAIT_BUFFERED: self._wait_buffered,
            Op.CONNECT: self._connect,
            Op.SUBSCRIBE: self._subscribe,
            Op.AWAIT_FLUSH: self._await_flush,
            Op.UNSUBSCRIBE: self._unsubscribe,
            Op.PAUSE: asyncio.sleep,  # bounded by the core, by close()'s deadline too
            Op.NEXT_REPLY: self._next_reply,
            Op.LISTEN_PAUSE: lambda wait_s: _wait(self._stopping, wait_s),
            Op.WAIT_DUE: self._wait_due,
            **redis_commands(
                core,
                lambda: self._client,
                lambda: self._reply_client,
                lambda: self._enqueue_script,
                lambda: self._abandon_script,
            ),
        }

    async def start(self) -> None:
        """Connect and start sending and listening for replies (``async with`` calls it; so
        does the first ``enqueue``)."""
        async with self._start_lock:
            if self._closed:
                raise ProducerClosed(f"{self!r} is closed")
            if self._redis is not None:
                return
            url = await asyncio.to_thread(
                resolve_redis_url, self.settings.redis_url, self.settings.data_dir
            )
            timeout_s = self.settings.redis_timeout_ms / 1000
            cluster = await is_cluster_url_async(url)
            self._redis = _client(url, cluster, timeout_s)
            self._replies = _client(url, cluster, timeout_s + REPLY_BLOCK_S)
            self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
            self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
            self._abandon_script = self._abandoner.register_script(ABANDON_SCRIPT)
            core = self._core
            self._tasks = [
                asyncio.create_task(self._run_until(steps, name), name=name)
                for name, steps in (
                    ("lancequeue-sender", core.sender),
                    ("lancequeue-replies", core.listener),
                    ("lancequeue-expiry", core.abandoner),
                )
            ]

    async def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> AsyncFuture:
        """Buffer one record for sending; return a future resolved once it is in the table.

        Returns at once unless the send buffer is full; then awaits room until the record's
        deadline (now plus ``timeout`` seconds, default ``timeout_ms``), raising ``QueueFull``
        (the table's queue stayed full) or ``WriteTimeout`` (Redis stayed unreachable) if it got
        none: the record was not written. Raises ``RecordRejected`` at once for a record that
        cannot be encoded or is over ``max_record_bytes`` encoded, and ``ProducerClosed`` after
        ``close()``. Errors of sending later go to the future; so does the writer's answer.
        """
        futures, failed_here = await self._enqueue([record], timeout)
        if failed_here:
            error = failed_here[0].exception()
            assert error is not None
            raise error
        return futures[0]

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[AsyncFuture]:
        """Buffer records in order; one future per record (``RecordRejected`` set on those that
        cannot be encoded or are over ``max_record_bytes``, never sent; ``QueueFull`` or
        ``WriteTimeout`` on those that could not be sent by their deadline, now plus
        ``timeout``). Awaits only for room in the buffer."""
        futures, _ = await self._enqueue(records, timeout)
        return futures

    async def write(self, record: Mapping[str, Any], timeout: float | None = None) -> None:
        """Send one record and wait until it is in the table (or raise why it is not)."""
        await self.write_many([record], timeout)

    async def write_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> None:
        """Send records together and wait for all; raises the first record's error. That takes
        ``timeout`` plus ``answer_grace_ms`` at most (plus a second if Redis hangs), unless a
        writer claimed a record and its commit takes longer."""
        futures = await self.enqueue_many(records, timeout)
        if futures:
            await asyncio.wait(futures)  # not gather: cancelling the wait leaves the futures be
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    async def close(self, timeout: float | None = None) -> None:
        """Send what is buffered, wait (bounded) for outstanding records to be answered, then
        stop. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        records that cannot be sent at once (queue full, Redis unreachable) and enqueues
        awaiting room get ``ProducerClosed`` and are not written.
        """
        core = self._core
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        async with self._start_lock:
            if self._closed:  # another close() is at work: it is done when it returns
                if asyncio.current_task() not in self._tasks:
                    await self._close_done.wait()
                return
            self._closed = True
            core.close_deadline = deadline
            core.closing = True
            for event in (self._buffered, self._room):
                event.set()
        try:
            await self._close(deadline)
        finally:
            core.stopping = True  # even if this close() was cancelled: the loops end
            self._stopping.set()
            self._due.set()
            self._close_done.set()

    async def _close(self, deadline: float) -> None:
        core = self._core
        if not self._tasks:  # never started: nothing was sent
            core.refuse_late(core.buffer.take_all())
            return
        sender, listener, abandoner = self._tasks
        ours = asyncio.current_task() in self._tasks  # a done-callback's close(): no waiting
        if not ours:
            await asyncio.wait({sender}, timeout=_left(deadline) + self._room_recheck_s)
        pending = core.outbox.futures()
        if pending and not ours:
            await asyncio.wait(pending, timeout=_left(deadline))
        core.stopping = True
        self._stopping.set()
        self._due.set()
        if await self._stop_listener(listener):
            await self._settle_inflight_at_close()  # else the in-flight list expires by itself
        await asyncio.wait({abandoner, sender}, timeout=2 * ABANDON_ATTEMPT_S)
        for task in (sender, abandoner):
            task.cancel()
        await asyncio.gather(sender, abandoner, return_exceptions=True)
        core.refuse_late(core.buffer.take_all())
        core.fail_unanswered()
        for client in (self._redis, self._replies, self._abandoner):
            if client is not None:
                await client.aclose()

    @property
    def outstanding(self) -> int:
        """Records enqueued and not yet answered by the writer (buffered ones included)."""
        return self._core.outstanding

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_redis", None) is not None and not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        return f"<AsyncProducer table={self.keys.table!r} id={self.producer_id}>"

    # -- enqueueing --------------------------------------------------------------------------

    async def _enqueue(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[AsyncFuture], list[AsyncFuture]]:
        """Encode and buffer; returns all futures and those failed here."""
        if self._redis is None or self._closed:
            await self.start()  # raises ProducerClosed once closed
        core = self._core
        futures, outgoing = core.register(
            records, asyncio.get_running_loop().create_future, timeout
        )
        failed = [future for future in futures if future.done()]  # RecordRejected
        placed = core.buffer.put(outgoing)
        if placed < len(outgoing):
            late = await self._wait_for_room(outgoing[placed:])
            if late:
                core.refuse_late(late)
                failed.extend(item.future for item in late)
        elif len(core.buffer) >= self.settings.chunk_records and placed:
            await asyncio.sleep(0)  # a chunk's worth is in: let the sender take it
        return futures, failed

    async def _wait_for_room(
        self, rest: list[Outgoing[AsyncFuture]]
    ) -> list[Outgoing[AsyncFuture]]:
        """Buffer ``rest`` as room is made, until each one's deadline; returns those that got
        none (or came after close())."""
        buffer = self._core.buffer
        try:
            while rest:
                self._room.clear()
                rest = rest[buffer.put(rest) :]
                if not rest or self._closed:
                    break
                left_s = rest[0].deadline - time.monotonic()
                if left_s <= 0:
                    break
                await _wait(self._room, left_s)
        except BaseException as exc:  # cancelled: what found no room is never sent
            self._core.fail_unsent(rest, exc)
            raise
        return rest

    # -- running the core's loops ------------------------------------------------------------

    async def _run_until(self, steps: Callable[[], Steps], name: str) -> None:
        """Run a loop of the core; should an exception escape it (a done-callback raising),
        start it again: records must not be left unanswered."""
        while True:
            try:
                await self._run(steps())
                return
            except asyncio.CancelledError:
                raise
            except BaseException:
                logger.exception("%s: restarting", name)
                if self._core.stopping:
                    return

    async def _run(self, steps: Steps) -> None:
        call = resume(steps, None, None)
        while call is not None:
            error: BaseException | None = None
            try:
                result = await self._perform(call)
            except BaseException as exc:  # the loop decides what a failed call means
                result, error = None, exc
            call = resume(steps, result, error)

    async def _perform(self, call: Call) -> Any:
        """The call, no longer than its ``timeout_s``: a hung Redis must not hold records past
        their deadline. A call cut short is as a lost connection: it may have run."""
        running = self._ops[call.op](*call.args)
        if call.timeout_s is None:
            return await running
        try:
            return await asyncio.wait_for(running, call.timeout_s)
        except asyncio.TimeoutError:
            raise RedisTimeoutError("no answer from Redis by the records' deadline") from None

    # -- the calls ---------------------------------------------------------------------------

    @property
    def _client(self) -> AsyncRedis:
        assert self._redis is not None, "start() made it"
        return self._redis

    @property
    def _reply_client(self) -> AsyncRedis:
        assert self._replies is not None, "start() made it"
        return self._replies

    async def _wait_buffered(self, wait_s: float | None) -> None:
        core = self._core
        self._buffered.clear()
        if wait_s is not None:  # a linger: until it ends, or a chunk's worth is in
            await _wait(self._buffered, wait_s)
        elif not len(core.buffer) and not core.closing:
            await self._buffered.wait()

    async def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._client
        if isinstance(client, aioredis.Redis):
            pool = client.connection_pool
            await pool.release(await pool.get_connection())  # type: ignore[no-untyped-call]
        else:
            await _refresh_cluster_connection(client, self.keys.stream)

    async def _subscribe(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.keys.flushed_channel)

    async def _await_flush(self, wait_s: float) -> None:
        assert self._pubsub is not None
        await self._pubsub.get_message(timeout=wait_s)

    async def _unsubscribe(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _next_reply(self) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        outbox = self._core.outbox
        async with self._reply_client.pipeline(transaction=False) as pipe:
            pipe.blmove(outbox.reply_key, outbox.inflight_key, REPLY_BLOCK_S)
            pipe.pexpire(outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = await pipe.execute()
        return message  # type: ignore[no-any-return]

    async def _wait_due(self, wait_s: float | None) -> None:
        await _wait(self._due, wait_s)
        self._due.clear()  # after the wait: a record numbered meanwhile is seen next turn

    async def _stop_listener(self, listener: asyncio.Task[None]) -> bool:
        """Have the listener end at its next turn, woken now by an empty reply (no results)
        pushed to our own reply list; cancel it if it does not end soon (Redis unreachable).
        Cancelling alone is not enough: redis-py may swallow a cancellation that lands in a
        command, and the listener would go on. Returns whether the wake reached Redis."""
        reply_key = self._core.outbox.reply_key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(reply_key, encode_results([]))
                pipe.pexpire(reply_key, 60_000)
                await pipe.execute()
            reachable = True
        except REDIS_FAILURES:
            reachable = False
        await asyncio.wait({listener}, timeout=2 * REPLY_BLOCK_S)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        return reachable

    async def _settle_inflight_at_close(self) -> None:
        """Settle and delete what the in-flight list still holds (the listener has stopped,
        possibly cancelled after Redis moved a message for it)."""
        key = self._core.outbox.inflight_key
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                leftovers, _ = await pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._core.settle_leftovers(leftovers)

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000


async def _wait(event: asyncio.Event, wait_s: float | None) -> None:
    """Until ``event`` is set or ``wait_s`` seconds have passed (None: no limit)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), wait_s)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _client(url: str, cluster: bool, socket_timeout_s: float) -> AsyncRedis:
    """A client that never repeats a command by itself: the producer decides what to send
    again after a lost connection."""
    return async_client(
        url,
        cluster,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )


async def _refresh_cluster_connection(client: aioredis.RedisCluster, key: str) -> None:
    """What a single server's pool does as it hands out a connection, for the cluster node
    serving ``key``: connect its next connection, replacing one the server closed while it sat
    idle (a cluster node hands out its connections unchecked)."""
    await client.initialize()
    node = client.get_node_from_key(key)
    if node is None:
        return
    connection = node.acquire_connection()
    try:
        if connection.is_connected:
            try:
                stale = await connection.can_read()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                stale = True
            if stale:
                await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]
    finally:
        node.release(connection)


def _resolve_ok(future: AsyncFuture) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_error(future: AsyncFuture, error: LancequeueError) -> None:
    if not future.done():
        future.set_exception(error)
