"""RSS and CPU of a process tree, sampled on a thread with psutil.

Each sample is the sum over a process and its descendants: resident memory, and user plus
system CPU seconds. The peak RSS is the largest sample; the CPU spent between two instants is
interpolated from the samples around them.
"""

from __future__ import annotations

import bisect
import threading
import time
from types import ModuleType
from typing import Any

from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import vm_hwm_bytes

BENCH_EXTRA_HINT = "pip install '.[bench]' from a lancequeue checkout"
"""How to install what the benchmark needs beyond lancequeue itself."""


def require_psutil() -> ModuleType:
    """The psutil module, or a :class:`BenchError` naming the extra that installs it."""
    try:
        import psutil
    except ImportError as exc:
        raise BenchError(
            f"lancequeue bench samples memory and CPU with psutil: {BENCH_EXTRA_HINT}"
        ) from exc
    return psutil


class ProcessTreeSampler:
    """Samples the RSS and CPU seconds of ``pid`` and its descendants every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self._psutil: Any = require_psutil()
        self._root = self._psutil.Process(pid)
        self._interval_s = interval_s
        self._samples: list[tuple[float, float]] = []  # (time.monotonic(), CPU seconds)
        self.peak_rss_bytes = 0
        """The largest RSS sampled so far."""
        self.hwm_bytes: int | None = None
        """The root process's own RSS high-water mark (``VmHWM``, Linux), as last read: unlike
        ``ru_maxrss``, it does not count the memory its ``fork`` inherited from the benchmark
        itself. None where there is no ``/proc``."""
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sample-{pid}", daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[int, float] | None:
        psutil = self._psutil
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return None
        rss = 0
        cpu = 0.0
        for process in processes:
            try:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    cpu += times.user + times.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # a descendant that just exited
        return rss, cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._sample()
            if sample is None:
                return
            rss, cpu = sample
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
            self.hwm_bytes = vm_hwm_bytes(self._pid) or self.hwm_bytes
            self._samples.append((time.monotonic(), cpu))
            self._stop.wait(self._interval_s)

    def cpu_at(self, instant: float) -> float | None:
        """CPU seconds used by the tree up to ``instant`` (``time.monotonic()``), interpolated
        between the samples around it; None before the first sample."""
        samples = list(self._samples)  # a snapshot: the thread appends
        times = [t for t, _ in samples]
        cpus = [cpu for _, cpu in samples]
        if not times:
            return None
        position = bisect.bisect_left(times, instant)
        if position == 0:
            return cpus[0]
        if position == len(times):
            return cpus[-1]
        before, after = times[position - 1], times[position]
        share = (instant - before) / (after - before) if after > before else 1.0
        return cpus[position - 1] + share * (cpus[position] - cpus[position - 1])

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds the tree used between two ``time.monotonic()`` instants."""
        first, last = self.cpu_at(start), self.cpu_at(end)
        return None if first is None or last is None else max(0.0, last - first)

    @property
    def samples(self) -> int:
        """How many samples were taken."""
        return len(self._samples)

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        self._thread.join()
