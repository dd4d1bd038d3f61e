"""The asyncio producer: the same contract as :class:`~lancequeue.producer.Producer`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.backoff import Backoff
from lancequeue.common.connection import resolve_redis_url
from lancequeue.common.errors import ConfigError, LancequeueError, ProducerClosed
from lancequeue.common.protocol import (
    ABANDON_SCRIPT,
    ENQUEUE_SCRIPT,
    encode_results,
)
from lancequeue.common.redis_client import (
    REDIS_FAILURES,
    AsyncRedis,
    async_client,
    is_cluster_url_async,
)
from lancequeue.producer.outbox import (
    ABANDON_ATTEMPT_S,
    REPLY_INFLIGHT_TTL_MS,
    Outbox,
)
from lancequeue.producer.sending import (
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    Sending,
    is_connection_loss,
    is_refusal,
)
from lancequeue.producer.settings import ProducerSettings
from lancequeue.producer.tick import TickSender

logger = logging.getLogger(__name__)

_REPLY_BLOCK_S = 1  # BLMOVE timeout: how often the reply listener checks whether to stop

AsyncFuture = asyncio.Future[None]
T = TypeVar("T")
_ABANDON_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, TimeoutError)


class AsyncProducer:
    """Sends records to a table's writer through Redis, for asyncio code::

        async with AsyncProducer("docs") as producer:
            future = await producer.enqueue({"id": 1, "vector": vector})
            await future                      # the record is in the table
            await producer.write({"id": 2, "vector": vector})   # the same, in one call

    ``enqueue`` awaits while the table's queue is full or Redis is unreachable, until the
    record's deadline (the call's time plus its timeout). Records enqueued by concurrent tasks
    in the same event-loop tick go to Redis in one call; sends go one at a time, in order. A
    future resolves by the deadline plus ``answer_grace_ms`` (plus a second if Redis hangs),
    unless a writer claimed its record first: it then waits for that writer's answer (see
    ``Producer``).
    """

    def __init__(
        self,
        table: str,
        redis_url: str | None = None,
        data_dir: Path | str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = ProducerSettings(table, redis_url, data_dir, **settings)
        if self.settings.linger_ms:
            raise ConfigError(
                "linger_ms is a setting of the sync Producer: AsyncProducer already sends the "
                "records enqueued in one event-loop tick together"
            )
        self._outbox: Outbox[AsyncFuture] = Outbox(
            table,
            self.settings.answer_grace_ms / 1000,
            self.settings.max_record_bytes,
            self.settings.pack_records,
        )
        self.keys = self._outbox.keys
        self.producer_id = self._outbox.producer_id
        self._entries = self._outbox.entries
        self._redis: AsyncRedis | None = None
        self._replies: AsyncRedis | None = None
        self._abandoner: AsyncRedis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._due_changed = asyncio.Event()
        self._outbox.on_sooner_due = self._due_changed.set
        self._closed = False
        self._closing = asyncio.Event()  # set by close(): ends pauses between reconnections
        self._stop_listening = asyncio.Event()
        self._start_lock = asyncio.Lock()
        # One send at a time, so sequence numbers follow stream order; _sender is the send
        # holding the lock (what blocks it tells the others what they fail with).
        self._send_lock = asyncio.Lock()
        self._sender: Sending[AsyncFuture] | None = None
        self._sending = 0
        self._idle = asyncio.Event()  # set while no send is in progress
        self._idle.set()
        # Single-record enqueues of one event-loop tick go in one send.
        self._tick = TickSender(self._send)

    async def start(self) -> None:
        """Connect and start listening for replies (``async with`` calls it)."""
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
            self._replies = _client(url, cluster, timeout_s + _REPLY_BLOCK_S)
            self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
            self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
            self._listener = asyncio.create_task(self._listen(), name="lancequeue-replies")
            self._expirer = asyncio.create_task(
                self._abandon_when_due(self._abandoner), name="lancequeue-expiry"
            )

    async def enqueue(self, record: Mapping[str, Any], timeout: float | None = None) -> AsyncFuture:
        """Send one record; return a future resolved once it is in the table.

        Records enqueued in the same event-loop tick (by concurrent tasks) with the same
        timeout are sent together, in one Redis call. The record's deadline is now plus
        ``timeout`` seconds (default ``timeout_ms``). Awaits
        while the queue is full or Redis is unreachable, raising ``QueueFull`` or
        ``WriteTimeout`` if the record could not be sent by its deadline (it was not written);
        raises ``RecordRejected`` at once for a record that cannot be encoded or is over
        ``max_record_bytes`` encoded. A record whose send Redis never confirmed may be in the
        stream: its future is returned, and resolves from the writer's answer or, lacking one,
        as the producer abandons it after the deadline plus ``answer_grace_ms``.
        """
        return await self._tick.send(record, timeout)

    async def enqueue_many(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None = None
    ) -> list[AsyncFuture]:
        """Send records in order; one future per record (``RecordRejected`` set on those that
        cannot be encoded or are over ``max_record_bytes``, never sent; ``QueueFull`` or
        ``WriteTimeout`` on those that could not be sent by their deadline, now plus
        ``timeout``)."""
        futures, _ = await self._send(records, timeout)
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
        """Wait (bounded) for outstanding records to be answered, then stop. Idempotent.

        Records still unanswered then get ``ProducerClosed`` (they may still be written);
        enqueues waiting for room or for Redis give up with ``ProducerClosed``.
        """
        async with self._start_lock:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
        wait_s = self.settings.close_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        # Sends in progress finish (or, waiting for room, give up within a second).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._room_recheck_s + wait_s)
        pending = self._outbox.futures()
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if self._listener is not None and await self._stop_listener(self._listener):
            await self._settle_inflight_at_close()  # else the in-flight list expires by itself
        if self._expirer is not None:
            self._due_changed.set()
            await self._expirer
        closed = ProducerClosed(
            "producer closed before the writer answered; the record may still be written"
        )
        for future in self._outbox.take_all():
            _resolve_error(future, closed)
        for client in (self._redis, self._replies, self._abandoner):
            if client is not None:
                await client.aclose()

    @property
    def outstanding(self) -> int:
        """Records sent and not yet answered by the writer."""
        return len(self._outbox)

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

    # -- sending -----------------------------------------------------------------------------

    async def _send(
        self, records: Iterable[Mapping[str, Any]], timeout: float | None
    ) -> tuple[list[AsyncFuture], list[AsyncFuture]]:
        """Register and send; returns all futures and those failed here, before any answer."""
        timeout_s = self.settings.timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        await self.start()  # raises ProducerClosed once closed
        self._sending += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            futures, outgoing, rejected = self._outbox.register(
                records, loop.create_future, deadline
            )
            for future, error in rejected:
                _resolve_error(future, error)
            sending = Sending(
                self._outbox,
                outgoing,
                deadline,
                timeout_s,
                self.settings.chunk_records,
                self.settings.chunk_bytes,
                _resolve_error,
            )
            if not sending.done:
                await self._send_in_turn(sending)
            return futures, [future for future, _ in rejected] + sending.failed
        finally:
            self._sending -= 1
            if self._sending == 0:
                self._idle.set()

    async def _send_in_turn(self, sending: Sending[AsyncFuture]) -> None:
        """Send once this producer's earlier sends are done (FIFO; waiting counts against the
        deadline: records queued behind a send that waits for room wait for room too)."""
        try:
            await asyncio.wait_for(self._send_lock.acquire(), sending.remaining_s())
        except asyncio.TimeoutError:
            sending.give_up(sending.not_sent_in_time(self._sender))
            return
        except BaseException as exc:  # cancelled while queued: nothing was sent
            sending.interrupted(exc)
            raise
        self._sender = sending
        try:
            await self._send_locked(sending)
        except RedisError as exc:  # neither a lost connection nor a refusal: fail the records
            sending.interrupted(exc)
        except BaseException as exc:  # cancellation: nothing unsent may hang
            sending.interrupted(exc)
            raise
        finally:
            self._sender = None
            self._send_lock.release()

    async def _send_locked(self, sending: Sending[AsyncFuture]) -> None:
        """Run the enqueue script until every record is in the stream: waiting for room while
        the queue is full, reconnecting and sending again while Redis is unreachable, until
        the deadline."""
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        pubsub: aioredis.client.PubSub | None = None
        try:
            while not sending.done:
                if sending.expired():
                    sending.give_up(sending.not_sent_in_time())
                    break
                try:
                    await _by_deadline(sending, self._connect())  # nothing is sent by this
                except Exception as exc:
                    if not is_connection_loss(exc):
                        sending.refused(exc)
                        break
                    sending.unreachable(exc)
                    await self._pause(sending, backoff)
                    continue
                args = sending.next_args()
                if args is None:
                    continue  # the deadline passed meanwhile
                try:
                    ids = await _by_deadline(
                        sending,
                        self._enqueue_script(keys=self._outbox.entries.script_keys, args=args),
                    )
                except BaseException as exc:
                    if is_refusal(exc):
                        sending.refused(exc)
                        break
                    sending.unconfirmed(exc)
                    if not is_connection_loss(exc):
                        raise
                    await self._pause(sending, backoff)
                    continue
                backoff.reset()
                if sending.added(len(ids)):
                    continue
                # The queue is full: wait for the writer's next flush.
                if self._closed:
                    sending.closed()
                    break
                try:
                    if pubsub is None:
                        # Subscribe, then try again at once: a flush between the last try and
                        # the subscription would otherwise be missed.
                        pubsub = self._sender_client.pubsub(ignore_subscribe_messages=True)
                        await _by_deadline(sending, pubsub.subscribe(self.keys.flushed_channel))
                        continue
                    # The cap bounds a missed message and how long close() waits.
                    await pubsub.get_message(
                        timeout=min(sending.remaining_s(), self._room_recheck_s)
                    )
                except Exception as exc:
                    if not is_connection_loss(exc):
                        raise
                    await _close_quietly(pubsub)
                    pubsub = None
                    sending.unreachable(exc)
                    await self._pause(sending, backoff)
        finally:
            await _close_quietly(pubsub)

    @property
    def _sender_client(self) -> AsyncRedis:
        assert self._redis is not None, "start() made it"
        return self._redis

    async def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._sender_client
        if isinstance(client, aioredis.Redis):
            pool = client.connection_pool
            await pool.release(await pool.get_connection())  # type: ignore[no-untyped-call]
        else:
            await _refresh_cluster_connection(client, self.keys.stream)
        entries = self._entries
        if entries.config_stale(time.monotonic()):
            if entries.learn_config(await self._read_config(), 0.0):
                await self._sender_client.setnx(self.keys.epoch, entries.new_epoch())
            entries.learn_config(await self._read_config(), time.monotonic())

    async def _read_config(self) -> list[bytes | str | None]:
        client = self._sender_client
        field = self._entries.config_field
        return [await client.hget(self.keys.config, field), await client.get(self.keys.epoch)]

    async def _pause(self, sending: Sending[AsyncFuture], backoff: Backoff) -> None:
        """Wait before reconnecting (bounded by the deadline; close() ends the wait and the
        send)."""
        if self._closed:
            sending.closed()
            return
        delay = min(backoff.next_delay(), sending.remaining_s())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    @property
    def _room_recheck_s(self) -> float:
        return self.settings.room_recheck_ms / 1000

    # -- replies -----------------------------------------------------------------------------

    async def _stop_listener(self, listener: asyncio.Task[None]) -> bool:
        """Have the listener end at its next turn, woken now by an empty reply (no results)
        pushed to our own reply list; cancel it if it does not end soon (Redis unreachable).
        Cancelling alone is not enough: redis-py may swallow a cancellation that lands in a
        command, and the listener would go on. Returns whether the wake reached Redis."""
        self._stop_listening.set()
        try:
            async with self._sender_client.pipeline(transaction=True) as pipe:
                pipe.rpush(self._outbox.reply_key, encode_results([]))
                pipe.pexpire(self._outbox.reply_key, 60_000)
                await pipe.execute()
            reachable = True
        except REDIS_FAILURES:
            reachable = False
        await asyncio.wait({listener}, timeout=2 * _REPLY_BLOCK_S)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        return reachable

    async def _listen(self) -> None:
        """Reply listener: move each message of this producer's reply list to its in-flight
        list, resolve the futures it answers, then drop it from there; fail the records not
        answered by their deadline plus the answer grace. Keeps going through lost connections
        and Redis restarts, until close() stops it: after a lost connection, it first settles
        what the in-flight list holds (a message Redis moved whose reply the lost connection
        never delivered)."""
        replies = self._replies
        assert replies is not None
        key = self._outbox.inflight_key
        backoff = Backoff(initial_s=0.1, max_s=_REPLY_BLOCK_S)
        recover = False
        while not self._stop_listening.is_set():
            try:
                if recover:
                    leftovers = await replies.lrange(key, 0, -1)
                    self._outbox.settle_all(leftovers, _resolve_ok, _resolve_error)
                    if leftovers:
                        await replies.ltrim(key, len(leftovers), -1)
                    recover = False
                message = await self._next_reply(replies)
                backoff.reset()
                if message is not None:
                    self._outbox.settle(message, _resolve_ok, _resolve_error)
                    await replies.lrem(key, 1, message)  # type: ignore[arg-type]
                elif len(self._outbox):
                    # A connection lost while blocked may have had a message moved for it.
                    recover = True
            except Exception as exc:  # Redis errors above all; nothing may end the listener
                recover = True
                delay = backoff.next_delay()
                logger.warning(
                    "reply listener: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_listening.wait(), delay)

    async def _abandon_when_due(self, abandoner: AsyncRedis) -> None:
        """Abandon each record the writer has not answered by its deadline plus the answer
        grace (see ``Producer._abandon_when_due``), apart from the reply listener."""
        script = abandoner.register_script(ABANDON_SCRIPT)
        while not self._stop_listening.is_set():
            self._due_changed.clear()
            due, wait_s = self._outbox.to_abandon(time.monotonic())
            if not due:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._due_changed.wait(), wait_s)
                continue
            for seqs, args in self._outbox.abandon_calls(due):
                try:
                    call = script(keys=self._outbox.abandon_keys, args=args)
                    gone = await asyncio.wait_for(call, ABANDON_ATTEMPT_S)
                except _ABANDON_FAILURES as exc:
                    self._outbox.unreachable(seqs, exc, time.monotonic(), _resolve_error)
                    continue
                self._outbox.abandoned(seqs, gone, _resolve_error)

    async def _next_reply(self, replies: AsyncRedis) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        async with replies.pipeline(transaction=False) as pipe:
            pipe.blmove(self._outbox.reply_key, self._outbox.inflight_key, _REPLY_BLOCK_S)
            pipe.pexpire(self._outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = await pipe.execute()
        return message  # type: ignore[no-any-return]

    async def _settle_inflight_at_close(self) -> None:
        """Settle and delete what the in-flight list still holds (the listener has stopped,
        possibly cancelled after Redis moved a message for it)."""
        try:
            async with self._sender_client.pipeline(transaction=True) as pipe:
                pipe.lrange(self._outbox.inflight_key, 0, -1)
                pipe.delete(self._outbox.inflight_key)
                leftovers, _ = await pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._outbox.settle_all(leftovers, _resolve_ok, _resolve_error)


async def _by_deadline(sending: Sending[AsyncFuture], call: Awaitable[T]) -> T:
    """Await a Redis call no longer than the records' deadline: a hung Redis must not hold
    ``enqueue`` past it. A call cut short is as a lost connection: it may have run."""
    try:
        return await asyncio.wait_for(call, sending.remaining_s())
    except asyncio.TimeoutError:
        raise RedisTimeoutError("no answer from Redis by the records' deadline") from None


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


async def _close_quietly(pubsub: aioredis.client.PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(*REDIS_FAILURES):
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]


def _resolve_ok(future: AsyncFuture) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_error(future: AsyncFuture, error: LancequeueError) -> None:
    if not future.done():
        future.set_exception(error)
