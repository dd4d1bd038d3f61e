"""The asyncio producer's runner: the core's three loops as tasks of the event loop, and the
calls they make (Redis, bounded by the records' deadline; waits on events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.protocol import ABANDON_SCRIPT, ENQUEUE_SCRIPT
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis, async_client
from lancequeue.common.replies import encode_results
from lancequeue.producer.calls import REPLY_BLOCK_S, Call, Op, Steps, resume
from lancequeue.producer.commands import redis_commands
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.outbox import ABANDON_ATTEMPT_S, REPLY_INFLIGHT_TTL_MS

logger = logging.getLogger(__name__)


class Tasks:
    """Runs a core's sender, listener and abandoner as tasks (made by ``AsyncProducer.start``,
    on its event loop)."""

    def __init__(
        self, core: ProducerCore[Any], url: str, cluster: bool, redis_timeout_s: float
    ) -> None:
        self._core = core
        self._redis = _client(url, cluster, redis_timeout_s)
        self._replies = _client(url, cluster, redis_timeout_s + REPLY_BLOCK_S)
        self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        self._abandon_script = self._abandoner.register_script(ABANDON_SCRIPT)
        self._pubsub: aioredis.client.PubSub | None = None
        self.buffered = asyncio.Event()  # the sender may have work
        core.buffer.on_buffered = self.buffered.set
        self.due = asyncio.Event()
        core.on_due = self.due.set
        self.stopping = asyncio.Event()  # ends the listener's pauses
        self._ops: dict[Op, Callable[..., Awaitable[Any]]] = {
            Op.WAIT_BUFFERED: self._wait_buffered,
            Op.CONNECT: self._connect,
            Op.SUBSCRIBE: self._subscribe,
            Op.AWAIT_FLUSH: self._await_flush,
            Op.UNSUBSCRIBE: self._unsubscribe,
            Op.PAUSE: asyncio.sleep,  # bounded by the core, by close()'s deadline too
            Op.NEXT_REPLY: self._next_reply,
            Op.LISTEN_PAUSE: lambda wait_s: wait_event(self.stopping, wait_s),
            Op.WAIT_DUE: self._wait_due,
            **redis_commands(
                core,
                lambda: self._redis,
                lambda: self._replies,
                lambda: self._enqueue_script,
                lambda: self._abandon_script,
            ),
        }
        self.tasks = [
            asyncio.create_task(self._run_until(steps, name), name=name)
            for name, steps in (
                ("lancequeue-sender", core.sender),
                ("lancequeue-replies", core.listener),
                ("lancequeue-expiry", core.abandoner),
            )
        ]

    async def finish(self, deadline: float, room_recheck_s: float) -> None:
        """``close()``'s part: let the sender send what is buffered, wait for answers until
        ``deadline``, stop every loop, settle or fail what is left, close the clients."""
        core = self._core
        sender, listener, abandoner = self.tasks
        ours = asyncio.current_task() in self.tasks  # close() from a loop: no waiting
        if not ours:
            await asyncio.wait({sender}, timeout=_left(deadline) + room_recheck_s)
        pending = core.outbox.futures()
        if pending and not ours:
            await asyncio.wait(pending, timeout=_left(deadline))
        core.stopping = True
        self.stopping.set()
        self.due.set()
        if await self._stop_listener(listener):
            await self._settle_inflight_at_close()  # else the in-flight list expires by itself
        await asyncio.wait({abandoner, sender}, timeout=2 * ABANDON_ATTEMPT_S)
        for task in (sender, abandoner):
            task.cancel()
        await asyncio.gather(sender, abandoner, return_exceptions=True)
        core.refuse_late(core.buffer.take_all())
        core.fail_unanswered()
        for client in (self._redis, self._replies, self._abandoner):
            await client.aclose()

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
        """The call, no longer than its ``timeout_s`` (its records' deadline; for the enqueue
        script, a little past it): a hung Redis must not hold records past it. A call cut short
        is as a lost connection: it may have run."""
        running = self._ops[call.op](*call.args)
        if call.timeout_s is None:
            return await running
        try:
            return await asyncio.wait_for(running, call.timeout_s)
        except asyncio.TimeoutError:
            raise RedisTimeoutError("no answer from Redis in time for the records") from None

    # -- the calls ---------------------------------------------------------------------------

    async def _wait_buffered(self, wait_s: float | None) -> None:
        core = self._core
        self.buffered.clear()
        if wait_s is not None:  # a linger: until it ends, or a chunk's worth is in
            await wait_event(self.buffered, wait_s)
        elif not len(core.buffer) and not core.closing:
            await self.buffered.wait()

    async def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._redis
        if isinstance(client, aioredis.Redis):
            pool = client.connection_pool
            await pool.release(await pool.get_connection())  # type: ignore[no-untyped-call]
        else:
            await _refresh_cluster_connection(client, self._core.keys.stream)

    async def _subscribe(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._core.keys.flushed_channel)

    async def _await_flush(self, wait_s: float) -> bool:
        assert self._pubsub is not None
        return await self._pubsub.get_message(timeout=wait_s) is not None

    async def _unsubscribe(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _next_reply(self) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        outbox = self._core.outbox
        async with self._replies.pipeline(transaction=False) as pipe:
            pipe.blmove(outbox.reply_key, outbox.inflight_key, REPLY_BLOCK_S)
            pipe.pexpire(outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = await pipe.execute()
        return message  # type: ignore[no-any-return]

    async def _wait_due(self, wait_s: float | None) -> None:
        await wait_event(self.due, wait_s)
        self.due.clear()  # after the wait: a record numbered meanwhile is seen next turn

    async def _stop_listener(self, listener: asyncio.Task[None]) -> bool:
        """Have the listener end at its next turn, woken now by an empty reply (no results)
        pushed to our own reply list; cancel it if it does not end soon (Redis unreachable).
        Cancelling alone is not enough: redis-py may swallow a cancellation that lands in a
        command, and the listener would go on. Returns whether the wake reached Redis."""
        reply_key = self._core.outbox.reply_key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
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
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                leftovers, _ = await pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._core.settle_leftovers(leftovers)


async def wait_event(event: asyncio.Event, wait_s: float | None) -> None:
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
