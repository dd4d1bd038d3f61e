"""Fault points, put into the real writer from the test side: the product carries none.

A writer process gets them with ``lancequeue writer --import tests.fault_points`` (the test
harness adds that when one of the variables below is set); the test process imports this module
in ``conftest.py`` for the writers it runs in process. Each point wraps one step of the real
writer and reads its variable every time, so with none set a wrapper only calls the step.

``LANCEQUEUE_CRASH_AT=<point>[:<n>]`` makes the writer SIGKILL itself the n-th time (default:
the first) it reaches ``<point>``, and every time after, so a test can kill it at a precise step
of a flush:

- ``mid_append``: the batch's data files are written, the commit has not happened;
- ``after_commit``: the table commit is done, the entries are not acked;
- ``after_ack``: the entries are acked and answered (one script does both);
- ``after_compact``: a compaction commit is done.

``LANCEQUEUE_PAUSE_AT=<point>[:<n>]`` makes the writer SIGSTOP itself the n-th time (default: the
first) it reaches ``<point>``, and only then, so a test can let something happen at a precise
step (another writer taking the table over) and SIGCONT it afterwards:

- ``compact``: a compaction is about to be planned (its handle on the table opened, the fence
  checked);
- ``after_ack``: a batch's entries are acked and answered (as the crash point of that name).

``LANCEQUEUE_REFUSE=<column>=<value>`` makes every write (or merge) of a batch holding a row whose
``<column>`` equals ``<value>`` (compared as text) fail with a ``ValueError``, as the table would
for a record the writer's checks missed: the writer must bisect the batch and land the others.
A merge that deletes keys is refused the same way if one of them holds that value.

``LANCEQUEUE_FAIL=<column>=<value>`` makes every commit of data files holding a row whose
``<column>`` equals ``<value>``, and every merge of such rows, fail with an ``OSError`` that is not
the data's fault (as a lost disk or object store would): retried, then answered ``WriteFailed``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lance.fragment
import pyarrow as pa
from lance.optimize import Compaction

from lancequeue.writer import compaction, keyed, table
from lancequeue.writer.flush import BatchSettler
from lancequeue.writer.serving import TableServer
from lancequeue.writer.settlement import Settlement

_crashed_at: dict[str, int] = {}
_paused_at: dict[str, int] = {}


def crash_point(point: str) -> None:
    """SIGKILL this process if ``LANCEQUEUE_CRASH_AT`` names ``point`` and its count is up."""
    if _reached("LANCEQUEUE_CRASH_AT", point, _crashed_at):
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(point: str) -> None:
    """SIGSTOP this process if ``LANCEQUEUE_PAUSE_AT`` names ``point`` and this is the n-th time
    it is reached; it goes on from here once it gets SIGCONT."""
    if _reached("LANCEQUEUE_PAUSE_AT", point, _paused_at, only_once=True):
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


def _named(variable: str, rows: Any) -> str | None:
    """``<column>=<value>`` of ``variable`` if this Arrow table holds that value there."""
    column, _, value = os.environ.get(variable, "").partition("=")
    if column in rows.column_names and value in {str(v) for v in rows.column(column).to_pylist()}:
        return f"{column}={value}"
    return None


def _refusal(rows: Any) -> None:
    """Raise ``ValueError`` if ``LANCEQUEUE_REFUSE`` names a value in this Arrow table."""
    if (named := _named("LANCEQUEUE_REFUSE", rows)) is not None:
        raise ValueError(f"the table refuses {named} (LANCEQUEUE_REFUSE)")


def _failure(named: str) -> OSError:
    return OSError(f"LanceError(IO): the disk failed committing {named} (LANCEQUEUE_FAIL)")


_failing: dict[int, tuple[Any, str]] = {}
"""Data files (by ``id``, each kept so that no other takes its id) written from rows
``LANCEQUEUE_FAIL`` names: their commit fails."""


# The steps wrapped: each original is kept and called.

_write_fragments = lance.fragment.write_fragments
_merge_uncommitted = keyed.merge_uncommitted
_commit_sync = table.TableSink._commit_sync
_commit = BatchSettler.commit
_answer = TableServer._answer


def _refusing_write_fragments(data: Any, *args: Any, **kwargs: Any) -> Any:
    _refusal(data)
    fragments = _write_fragments(data, *args, **kwargs)
    if (named := _named("LANCEQUEUE_FAIL", data)) is not None:
        _failing.update((id(fragment), (fragment, named)) for fragment in fragments)
    return fragments


def _refusing_merge(dataset: Any, key: Any, rows: Any, deletes: Any) -> Any:
    if rows is not None:
        _refusal(rows)
        if (named := _named("LANCEQUEUE_FAIL", rows)) is not None:
            raise _failure(named)
    elif deletes:
        _refusal(pa.Table.from_pylist([dict(zip(key.columns, k, strict=True)) for k in deletes]))
    return _merge_uncommitted(dataset, key, rows, deletes)


def _crashing_commit_sync(self: table.TableSink, fragments: Any, *args: Any) -> int:
    crash_point("mid_append")
    for fragment in fragments:
        if id(fragment) in _failing:
            raise _failure(_failing[id(fragment)][1])
    return _commit_sync(self, fragments, *args)


async def _crashing_commit(self: BatchSettler, *args: Any, **kwargs: Any) -> Settlement:
    settlement = await _commit(self, *args, **kwargs)
    if settlement.commits:
        crash_point("after_commit")
    return settlement


async def _crashing_answer(self: TableServer, *args: Any, **kwargs: Any) -> None:
    await _answer(self, *args, **kwargs)
    crash_point("after_ack")
    pause_point("after_ack")


class _Compaction:
    """Lance's ``Compaction`` as the writer's table and compaction modules see it, with the two
    points."""

    @staticmethod
    def plan(*args: Any, **kwargs: Any) -> Any:
        pause_point("compact")
        return Compaction.plan(*args, **kwargs)

    @staticmethod
    def commit(*args: Any, **kwargs: Any) -> Any:
        metrics = Compaction.commit(*args, **kwargs)
        crash_point("after_compact")
        return metrics


lance.fragment.write_fragments = _refusing_write_fragments
keyed.merge_uncommitted = _refusing_merge
table.TableSink._commit_sync = _crashing_commit_sync  # type: ignore[method-assign]
BatchSettler.commit = _crashing_commit  # type: ignore[method-assign]
TableServer._answer = _crashing_answer  # type: ignore[method-assign]
table.Compaction = _Compaction  # type: ignore[misc, assignment]  # commits there
compaction.Compaction = _Compaction  # type: ignore[misc, assignment]  # plans there
