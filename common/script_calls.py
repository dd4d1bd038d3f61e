"""Lua script calls on a hot path, at a fraction of redis-py's per-call cost.

A script call through redis-py's asyncio client costs about 110-230 µs of CPU here: taking a
connection from the pool and checking it, encoding each argument in Python, a task of its own
(``asyncio.wait_for``) to send under the socket timeout, a timer to read, its retry wrapper. A
writer makes three calls a batch (read, claim, ack and answer), so on small batches that is
several µs a row. :class:`ScriptCalls` sends the same ``EVALSHA`` on connections of its own,
made by the client's pool class with the pool's settings (address, TLS, unix socket, user and
password), packed by hiredis in one C call, and bounds the whole round trip by one
``asyncio.timeout``: about 65-80 µs. A Redis that hangs is noticed as before: the deadline is
the client's ``socket_timeout`` (redis-py's default of 5 s, or what the URL says), and the call
fails with redis-py's own ``TimeoutError``.

A connection left idle for ``IDLE_CHECK_S`` is checked before use, as redis-py's pool checks
every one it hands out: one the server closed meanwhile (its ``timeout`` setting, a proxy) is
made anew rather than failing the call. Everything else stays redis-py's: connecting (and
reconnecting after a failure), error replies (``ResponseError`` and its kinds), and a script
Redis does not hold (``NOSCRIPT``, as after a restart), which the script object's own call
loads. A Redis Cluster client keeps its own path (it routes by slot and follows ``MOVED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.client import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis

IDLE_CHECK_S = 0.5
"""A connection unused for this long is checked for a close by the server before use (less
than the shortest idle timeout Redis can be given, a second)."""

Arg = bytes | str | int | float


class ScriptCalls:
    """Runs Lua scripts registered on ``redis`` (``register_script``) over connections of its
    own, one per call in flight."""

    def __init__(self, redis: AsyncRedis, timeout_s: float | None = None) -> None:
        self._redis = redis
        kwargs = redis.connection_pool.connection_kwargs if isinstance(redis, Redis) else {}
        self._timeout_s: float | None = (
            timeout_s if timeout_s is not None else kwargs.get("socket_timeout")
        )
        """Longest a call may take, sending and reading (None: no limit, as redis-py's)."""
        self._idle: list[tuple[AbstractConnection, float]] = []
        """Connections not in use, each with when it was last used (``time.monotonic()``)."""
        self._made: list[AbstractConnection] = []

    def register(self, source: str) -> AsyncScript:
        """A script object for ``source``, on the client these calls are for."""
        return self._redis.register_script(source)

    async def __call__(
        self, script: AsyncScript, keys: Sequence[bytes | str], args: Sequence[Arg]
    ) -> Any:
        """What ``script(keys=keys, args=args)`` returns, or raises."""
        if not isinstance(self._redis, Redis):  # a cluster: routed by redis-py
            return await script(keys=keys, args=args)
        words: Any = (b"EVALSHA", script.sha, len(keys), *keys, *args)  # hiredis's stub: 1-tuple
        command = hiredis.pack_command(words)
        connection = await self._take(self._redis)
        try:
            async with asyncio.timeout(self._timeout_s):
                await connection.send_packed_command(command, check_health=False)
                reply = await connection.read_response()
        except NoScriptError:
            self._give_back(connection)  # the reply was read: the connection is in step
            return await script(keys=keys, args=args)  # loads it, then runs it
        except ResponseError:
            self._give_back(connection)  # an error reply, read whole: in step
            raise
        except BaseException as exc:  # the reply may be unread: start afresh next time
            await connection.disconnect(nowait=True)
            self._give_back(connection)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(
                    f"Redis did not answer a script call within {self._timeout_s}s"
                ) from None
            raise
        self._give_back(connection)
        return reply

    async def _take(self, redis: Redis) -> AbstractConnection:
        """An idle connection (checked if idle for long), or a new one."""
        if not self._idle:
            return self._connection(redis)
        connection, used_at = self._idle.pop()
        if connection.is_connected and time.monotonic() - used_at > IDLE_CHECK_S:
            try:
                stale = await connection.can_read()  # data, or a close, waiting: not in step
            except (RedisConnectionError, OSError):
                stale = True
            if stale:
                await connection.disconnect(nowait=True)  # the send connects it again
        return connection

    def _give_back(self, connection: AbstractConnection) -> None:
        self._idle.append((connection, time.monotonic()))

    def _connection(self, redis: Redis) -> AbstractConnection:
        pool = redis.connection_pool
        # the deadline is the call's (asyncio.timeout), not a timer per socket operation
        connection: AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None}
        )
        self._made.append(connection)
        return connection

    async def aclose(self) -> None:
        """Close the connections it made, every one of them, without waiting on Redis (it may
        be what failed)."""
        made, self._made, self._idle = self._made, [], []
        for connection in made:
            with contextlib.suppress(*REDIS_FAILURES):
                await connection.disconnect(nowait=True)
