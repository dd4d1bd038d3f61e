"""Latency figures of the benchmark, in one shape for every system: p50/p95/p99/max in ms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)
"""The percentiles every latency summary reports."""


def latency_summary_ms(seconds: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, Any]:
    """``{"count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}`` of latencies given in
    seconds; the figures are None when there are none."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    summary: dict[str, Any] = {"count": int(values.size)}
    for percentile in PERCENTILES:
        summary[f"p{percentile}_ms"] = (
            round(float(np.percentile(values, percentile)), 3) if values.size else None
        )
    summary["max_ms"] = round(float(values.max()), 3) if values.size else None
    summary["mean_ms"] = round(float(values.mean()), 3) if values.size else None
    return summary
