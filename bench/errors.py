"""What the benchmark raises when a run cannot be trusted or cannot start."""

from __future__ import annotations

from lancequeue.common.errors import LancequeueError


class BenchError(LancequeueError):
    """A benchmark run failed: a process did not start or exit, or the table is wrong."""
