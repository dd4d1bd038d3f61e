"""``--on-flushed`` hooks the process tests load into real writer subprocesses."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any


def block_forever(records: list[dict[str, Any]]) -> None:
    """Mark that a flush reached the hook, then never return: a flush stuck mid-way."""
    Path(os.environ["LANCEQUEUE_TEST_MARKER"]).write_text(str(len(records)))
    threading.Event().wait()


def append_ids(records: list[dict[str, Any]]) -> None:
    """Append the flushed ids to the file named by LANCEQUEUE_TEST_MARKER, one line a flush."""
    with open(os.environ["LANCEQUEUE_TEST_MARKER"], "a") as out:
        out.write(" ".join(str(r["id"]) for r in records) + "\n")


async def hold_the_batch_of_id_2(records: list[dict[str, Any]]) -> None:
    """Never return for the batch holding id 2 (its answers are held back); return at once
    for the others. The writer's event loop goes on meanwhile."""
    if any(record.get("id") == 2 for record in records):
        await asyncio.Event().wait()
