"""How a writer is asked to stop: by a signal or a caller (flush what is in hand first), or
because another writer replaced it (stop at once, flush nothing)."""

from __future__ import annotations

import asyncio
import logging

from lancequeue.common.errors import WriterReplaced

logger = logging.getLogger(__name__)


class Shutdown:
    """Whether the writer is asked to stop, and whether because another writer replaced it."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.replaced = False

    def request(self) -> None:
        self.requested.set()

    def replace(self, exc: WriterReplaced) -> None:
        """Another writer holds the table: stop at once, without flushing (what this writer
        holds stays pending, for the new one)."""
        if not self.replaced:
            logger.error("%s; stopping without flushing", exc)
        self.replaced = True
        self.requested.set()
