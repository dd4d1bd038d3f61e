"""Crash points for the fault-injection tests, inert unless ``LANCEQUEUE_CRASH_AT`` is set.

``LANCEQUEUE_CRASH_AT=<point>[:<n>]`` makes the writer SIGKILL itself the n-th time (default:
the first) it reaches ``<point>``, so a test can kill it at a precise step of a flush:

- ``mid_append``: the batch's data files are written, the commit has not happened;
- ``after_commit``: the table commit is done, the entries are not acked;
- ``after_ack``: the entries are acked and answered (one MULTI does both);
- ``after_compact``: a compaction commit is done.

``LANCEQUEUE_PAUSE_AT=<point>[:<n>]`` makes the writer SIGSTOP itself the n-th time (default: the
first) it reaches ``<point>``, and only then, so a test can let something happen at a precise
step (another writer taking the table over) and SIGCONT it afterwards:

- ``compact``: a compaction is about to run (its handle on the table opened, the fence checked).

``LANCEQUEUE_REFUSE=<column>=<value>`` makes every append of a batch holding a row whose
``<column>`` equals ``<value>`` (compared as text) fail with a ``ValueError``, as the table would
for a record the writer's checks missed: the writer must bisect the batch and land the others.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_ENV = "LANCEQUEUE_CRASH_AT"
_crashed_at: dict[str, int] = {}


def crash_point(point: str) -> None:
    """SIGKILL this process if ``LANCEQUEUE_CRASH_AT`` names ``point`` and its count is up."""
    if _reached(_ENV, point, _crashed_at):
        os.kill(os.getpid(), signal.SIGKILL)


_PAUSE_ENV = "LANCEQUEUE_PAUSE_AT"
_paused_at: dict[str, int] = {}


def pause_point(point: str) -> None:
    """SIGSTOP this process if ``LANCEQUEUE_PAUSE_AT`` names ``point`` and this is the n-th time
    it is reached; it goes on from here once it gets SIGCONT."""
    if _reached(_PAUSE_ENV, point, _paused_at, only_once=True):
        os.kill(os.getpid(), signal.SIGSTOP)


def _reached(variable: str, point: str, counts: dict[str, int], only_once: bool = False) -> bool:
    """Whether ``variable`` (``<point>[:<n>]``) names ``point`` and this is its n-th time (or,
    unless ``only_once``, a later one)."""
    spec = os.environ.get(variable)
    if not spec:
        return False
    name, _, count = spec.partition(":")
    if name != point:
        return False
    counts[point] = counts.get(point, 0) + 1
    due = int(count or 1)
    return counts[point] == due if only_once else counts[point] >= due


def refusal(rows: Any) -> None:
    """Raise ``ValueError`` if ``LANCEQUEUE_REFUSE`` names a value in this Arrow table."""
    spec = os.environ.get("LANCEQUEUE_REFUSE")
    if not spec:
        return
    column, _, value = spec.partition("=")
    if column in rows.column_names and value in {str(v) for v in rows.column(column).to_pylist()}:
        raise ValueError(f"the table refuses {column}={value} (LANCEQUEUE_REFUSE)")
