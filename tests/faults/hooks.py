"""``--on-flushed`` hooks for the fault tests' writer processes (``tests.faults.hooks:NAME``).

Both are coroutine functions: they delay the answers of one flush (the hook runs after the
commit and before the ack), while the writer's event loop, and so its lease, keeps going.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

SLEEP_ENV = "LANCEQUEUE_TEST_HOOK_SLEEP_S"
MARKER_ENV = "LANCEQUEUE_TEST_MARKER"
GO_ENV = "LANCEQUEUE_TEST_GO"
_HOLD_TIMEOUT_S = 60.0
_calls = 0


async def slow_first_flush(records: list[dict[str, Any]]) -> None:
    """Take ``$LANCEQUEUE_TEST_HOOK_SLEEP_S`` seconds (6 unless set) over the first flush: a
    slow hook (this sleep is the fault, not a wait for anything)."""
    global _calls
    _calls += 1
    if _calls == 1:
        await asyncio.sleep(float(os.environ.get(SLEEP_ENV, "6")))


async def hold_first_flush(records: list[dict[str, Any]]) -> None:
    """On the first flush: create ``$LANCEQUEUE_TEST_MARKER`` (its batch is committed, not yet
    acked), then wait until ``$LANCEQUEUE_TEST_GO`` exists: the test does something right then
    (stalls Redis) and lets the flush go on."""
    global _calls
    _calls += 1
    if _calls != 1:
        return
    Path(os.environ[MARKER_ENV]).write_text(str(len(records)))
    go = Path(os.environ[GO_ENV])
    deadline = time.monotonic() + _HOLD_TIMEOUT_S
    while not go.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # poll
