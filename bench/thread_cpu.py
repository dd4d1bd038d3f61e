"""Where a writer process's CPU goes, thread by thread (Linux: ``/proc/PID/task``).

The writer's threads do three kinds of work, told apart by the thread:

- ``event loop``: the main thread, all of the writer's own Python: reading and decoding
  entries, checking and building Arrow, the Redis round trips, acks and answers;
- ``table calls``: the other Python threads, each inside a Lance call (a batch's data files,
  its commit, a compaction, cleaning up old versions, index upkeep), and Lance's own CPU pool;
- ``Lance I/O``: Lance's background I/O threads (files opened, written, listed, deleted).

A thread that ended between the two readings is counted in ``ended`` (the process's total
less the threads still there), so the parts add up to the process's CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

ThreadTimes = dict[int, tuple[str, float]]
"""Per thread id: its name (``comm``) and its CPU seconds (user plus system)."""

GROUPS = ("event loop", "table calls", "Lance I/O", "ended")
"""The parts of a split, in the order they are reported."""

_IO_PREFIX = "lance_backgroun"  # Linux keeps 15 characters of a thread's name
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_times(pid: int) -> ThreadTimes | None:
    """Each thread of ``pid`` with its name and CPU seconds so far; None where ``/proc`` does
    not say (not Linux)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return None
    times: ThreadTimes = {}
    for task in tasks.iterdir():
        try:
            name = (task / "comm").read_text().strip()
            times[int(task.name)] = (name, _cpu_s(task))
        except OSError:  # the thread ended while being read
            continue
    return times


def _cpu_s(task: Path) -> float:
    """A thread's CPU seconds: from the scheduler's count in nanoseconds where the kernel
    keeps one, else from ``stat``'s user and system clock ticks (a hundredth of a second,
    too coarse for a thread that ran briefly)."""
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        # Fields after the parenthesised name; utime and stime are the 12th and 13th.
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def split_cpu(
    pid: int, before: ThreadTimes | None, after: ThreadTimes | None, total_s: float
) -> dict[str, float] | None:
    """The CPU seconds of ``pid`` between two readings, per part of ``GROUPS``; ``total_s``
    is the process's own count over the same span. None if either reading is missing."""
    if before is None or after is None:
        return None
    parts = dict.fromkeys(GROUPS, 0.0)
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if tid == pid:
            parts["event loop"] += spent
        elif name.startswith(_IO_PREFIX):
            parts["Lance I/O"] += spent
        else:
            parts["table calls"] += spent
    parts["ended"] = max(0.0, total_s - sum(parts.values()))
    return parts
