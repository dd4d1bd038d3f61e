"""The writer's lease on its table: one writer at a time, each with a larger fencing token.

A writer takes the lease only when no other writer holds it (``SET NX PX``) and renews it well
inside its expiry. Taking it hands out the next fencing token (``INCR``). A second writer started
for the same table waits as a standby, polling, and takes the lease over once the first one's
expires: within ``lease_ms`` of the first one dying or hanging.

The token is also written into the table itself when a writer takes over (see ``table.py``), so a
writer that was paused past its expiry and resumed cannot commit again: it checks its lease
before every commit, and the table rejects a commit based on a version older than the newer
writer's fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import Protocol

from redis.exceptions import AuthenticationError, NoPermissionError

from lancequeue.common.errors import WriterReplaced
from lancequeue.common.keys import TableKeys
from lancequeue.common.lua_scripts import lua_script
from lancequeue.common.protocol import CONFIG_WRITER_UNTIL
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis
from lancequeue.common.redis_tls import tls_error
from lancequeue.writer.retrying import Outage
from lancequeue.writer.shutdown import Shutdown

logger = logging.getLogger(__name__)

# The lease's scripts (lua/lease_*.lua): take it, raise its fencing token, renew it (with the
# settings the writer publishes), give it up.
_ACQUIRE = lua_script(__name__, "lease_acquire.lua")
_RAISE_TOKEN = lua_script(__name__, "lease_raise_token.lua")
_RENEW = lua_script(__name__, "lease_renew.lua", CONFIG_WRITER_UNTIL=CONFIG_WRITER_UNTIL)
_RELEASE = lua_script(__name__, "lease_release.lua", CONFIG_WRITER_UNTIL=CONFIG_WRITER_UNTIL)


class TokenSource(Protocol):
    """The lease a sink's writer holds (``lease.Lease``)."""

    token: int

    async def raise_token(self, floor: int) -> int: ...


class Renewal(enum.Enum):
    HELD = 1
    RETAKEN = 2
    """The lease had vanished (Redis restarted without its data, or this writer stalled past
    the expiry and nobody took it) and was free: taken back with the same token."""
    LOST = 0
    """Another writer holds the lease: this one was replaced."""


class Lease:
    """One writer's hold on its table's lease. ``published`` are the config-hash fields the
    writer publishes for producers (``max_queue_size``, ``max_batch``): each renewal writes
    them again, so they are back within a renewal if Redis lost them or a client changed
    them."""

    def __init__(
        self,
        redis: AsyncRedis,
        keys: TableKeys,
        consumer: str,
        ttl_ms: int,
        published: dict[str, int | str] | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.token = 0
        self._published: dict[str, int | str] = dict(published or {})
        self._acquire = redis.register_script(_ACQUIRE)
        self._raise_token = redis.register_script(_RAISE_TOKEN)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def publish(self, field: str, value: int | str) -> None:
        """Publish ``field`` in the config hash too, from the next renewal on."""
        self._published[field] = value

    @property
    def renew_interval_s(self) -> float:
        return self.ttl_ms / 4000

    @property
    def poll_interval_s(self) -> float:
        """How often a standby tries to take the lease."""
        return self.ttl_ms / 16000

    @property
    def value(self) -> str:
        return f"{self.consumer} {self.token}"

    async def acquire(self, give_up: asyncio.Event, stand_by: bool = True) -> bool:
        """Take the lease, waiting as a standby while another writer holds it, and riding out
        Redis outages (one log line, then retries with backoff). False if ``give_up`` was set
        first, or if not ``stand_by`` and the holder is live: it kept the lease past one
        expiry (a dead writer's lease runs out within that, and is taken over). Raises at once
        what waiting cannot fix: Redis refusing the account, or :class:`RedisTlsError` (the
        server's certificate does not verify)."""
        announced = False
        held_since = time.monotonic()
        outage = Outage(f"table {self._keys.table!r}: taking the lease")
        while not give_up.is_set():
            try:
                token = int(
                    await self._acquire(
                        keys=[self._keys.stream, self._keys.lease, self._keys.fence],
                        args=[self.consumer, self.ttl_ms],
                    )
                )
                if token:
                    self.token = token
                    return True
                if not stand_by and time.monotonic() > held_since + 1.25 * self.ttl_ms / 1000:
                    logger.info(
                        "writer %s holds table %r: it serves the queue; not standing by",
                        await self.holder(),
                        self._keys.table,
                    )
                    return False
                if not announced:
                    logger.warning(
                        "writer %s holds table %r; standing by until its lease expires",
                        await self.holder(),
                        self._keys.table,
                    )
                    announced = True
                delay = self.poll_interval_s
                outage.succeeded()
            except (AuthenticationError, NoPermissionError):
                raise  # a configuration error: waiting cannot help
            except REDIS_FAILURES as exc:
                if (error := tls_error(exc)) is not None:
                    raise error from exc  # a configuration error too
                delay = outage.failed(exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(give_up.wait(), delay)
        return False

    async def raise_token(self, floor: int) -> int:
        """Take a token above ``floor`` (one found in the table: Redis lost the counter), keeping
        the lease. Raises ``WriterReplaced`` if another writer holds the lease now."""
        token = int(
            await self._raise_token(
                keys=[self._keys.stream, self._keys.lease, self._keys.fence],
                args=[self.value, self.consumer, floor],
            )
        )
        if not token:
            raise WriterReplaced(f"writer {await self.holder()} holds the lease now")
        logger.warning(
            "table %r holds fencing token %d, above Redis's counter (Redis lost its data?): "
            "this writer takes token %d",
            self._keys.table,
            floor,
            token,
        )
        self.token = token
        return token

    async def renew(self) -> Renewal:
        """Extend the lease (taking it back if it vanished and is free), and publish the
        writer's settings again."""
        fields = [part for pair in self._published.items() for part in pair]
        state = await self._renew(
            keys=[self._keys.stream, self._keys.lease, self._keys.writer, self._keys.config],
            args=[self.value, self.ttl_ms, int(time.time() * 1000), *fields],
        )
        return Renewal(int(state))

    async def keep(self, stop: asyncio.Event, shutdown: Shutdown) -> None:
        """Renew the lease every quarter of its expiry (publishing the settings again each
        time) until ``stop``; if another writer holds it now, tell ``shutdown`` this writer was
        replaced, and return. The first renewal is at once, so producers see a writer serving
        the table from its start. Redis failures are logged and the next renewal tries again."""
        first = True
        while True:
            if not first:
                try:
                    await asyncio.wait_for(stop.wait(), self.renew_interval_s)
                    return
                except asyncio.TimeoutError:
                    pass
            first = False
            try:
                state = await self.renew()
            except REDIS_FAILURES as exc:
                logger.warning("lease renewal failed: %s: %s", type(exc).__name__, exc)
                continue
            if state is Renewal.RETAKEN:
                logger.warning("table %r's lease had vanished; retaken", self._keys.table)
            elif state is Renewal.LOST:
                holder = None
                with contextlib.suppress(*REDIS_FAILURES):
                    holder = await self.holder()
                shutdown.replace(
                    WriterReplaced(
                        f"writer {holder} now holds table {self._keys.table!r} (this writer "
                        "stalled past its lease)"
                    )
                )
                return

    async def holder(self) -> str | None:
        value = await self._redis.get(self._keys.lease)
        return value.decode() if isinstance(value, bytes) else value

    async def release(self) -> None:
        await self._release(keys=[self._keys.lease, self._keys.config], args=[self.value])
