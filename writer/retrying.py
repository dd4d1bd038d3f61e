"""Redis calls the writer must see through: waited out while Redis fails, given up only once
the writer is stopping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import AuthenticationError, NoPermissionError

from lancequeue.common.backoff import Backoff
from lancequeue.common.errors import ConfigError
from lancequeue.common.redis_client import REDIS_FAILURES

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisGaveUp(Exception):
    """A Redis call kept failing after a stop was requested."""


class Outage:
    """Logs a stretch of failing Redis calls as one warning when it starts and one line when
    it ends (each retry in between at debug level), and paces the retries."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._backoff = Backoff()
        self._started: float | None = None
        self._failures = 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before the next try."""
        delay = self._backoff.next_delay()
        self._failures += 1
        if self._started is None:
            self._started = time.monotonic()
            logger.warning(
                "%s: redis: %s: %s; retrying with backoff until it answers",
                self._what,
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug(
                "%s: redis: %s: %s; retry in %.2fs", self._what, type(exc).__name__, exc, delay
            )
        return delay

    def succeeded(self) -> None:
        if self._started is not None:
            logger.info(
                "%s: redis answers again (after %.1fs and %d failed tries)",
                self._what,
                time.monotonic() - self._started,
                self._failures,
            )
            self._started = None
            self._failures = 0
        self._backoff.reset()


async def until_done(
    operation: Callable[[], Awaitable[T]], stopping: asyncio.Event, what: str = "writer"
) -> T:
    """Run a Redis operation until it succeeds. Unreachable Redis is waited out, with backoff
    and a log line per retry; other Redis errors (out of memory, a read-only replica, ``BUSY``)
    are retried too, since giving up could leave committed records unanswered. Once
    ``stopping`` is set, a failure raises ``RedisGaveUp`` instead: what is unacked stays
    pending, and the next writer settles it (from the watermark if it was committed)."""
    outage = Outage(what)
    while True:
        try:
            result = await operation()
        except (AuthenticationError, NoPermissionError) as exc:
            raise ConfigError(f"redis refused the writer: {exc} (check its ACL user)") from exc
        except REDIS_FAILURES as exc:
            if stopping.is_set():
                raise RedisGaveUp(f"redis: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.succeeded()
        return result
