"""How a table's storage shape reads: fragments, versions, a full scan and brute-force vector
search, on the table as a system wrote it and on a fully compacted copy of it.

Measured in the benchmark's own process after the system's processes have exited, so it
counts towards no throughput figure. The copy is made with ``shutil.copytree`` next to the
table's database and compacted with Lance (``compact_files``, then ``cleanup_old_versions``),
so the two differ only in how their rows are laid out.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import lance
import numpy as np

from lancequeue.bench.records import make_records

SCAN_WARMUP_RUNS = 1
"""Untimed full scans run first (opening every fragment's files, filling caches)."""
SCAN_RUNS = 3
"""Timed full scans per table; their median is reported."""
SEARCH_QUERIES = 20
"""Timed nearest-neighbour queries per table; their p50 is reported."""
SEARCH_WARMUP_QUERIES = 2
"""Untimed queries run first (opening files, filling caches)."""
SEARCH_K = 10
"""Neighbours each query asks for."""
VECTOR_COLUMN = "vector"
"""The column searched."""
_QUERY_SEED_OFFSET = 1  # queries come from another seed: vectors no table holds
_MS_PER_S = 1000.0
_ROWS_PER_SCAN_UNIT = 1000  # scan time is also given per this many rows


def search_queries(count: int, dim: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``count`` query vectors from the record generator, with a seed of their own (so no
    table holds them); the same for every table of a run."""
    records = make_records(0, count, dim, text_bytes=0, seed=seed + _QUERY_SEED_OFFSET)
    return np.stack([record["vector"] for record in records])


def _scan_ms(dataset: lance.LanceDataset) -> list[float]:
    runs_ms = []
    for run in range(SCAN_WARMUP_RUNS + SCAN_RUNS):
        started = time.perf_counter()
        dataset.to_table()  # every row, every column
        if run >= SCAN_WARMUP_RUNS:
            runs_ms.append((time.perf_counter() - started) * _MS_PER_S)
    return runs_ms


def _search_ms(
    dataset: lance.LanceDataset, queries: np.ndarray[Any, np.dtype[np.float32]]
) -> list[float]:
    runs_ms = []
    for position, query in enumerate(queries):
        nearest = {"column": VECTOR_COLUMN, "q": query, "k": SEARCH_K, "use_index": False}
        started = time.perf_counter()
        dataset.to_table(nearest=nearest)
        if position >= SEARCH_WARMUP_QUERIES:
            runs_ms.append((time.perf_counter() - started) * _MS_PER_S)
    return runs_ms


def read_figures(uri: str, queries: np.ndarray[Any, np.dtype[np.float32]]) -> dict[str, Any]:
    """Rows, fragments and versions of the table at ``uri``; the median of ``SCAN_RUNS`` full
    scans (every column) after ``SCAN_WARMUP_RUNS`` untimed ones, and the p50 of brute-force
    k-NN queries (the first ``SEARCH_WARMUP_QUERIES`` of ``queries`` untimed), all in one
    freshly opened dataset."""
    dataset = lance.dataset(uri)
    rows = dataset.count_rows()
    scan_runs_ms = _scan_ms(dataset)
    search_runs_ms = _search_ms(dataset, queries)
    scan_ms = statistics.median(scan_runs_ms)
    return {
        "rows": rows,
        "fragments": len(dataset.get_fragments()),
        "versions": len(dataset.versions()),
        "scan_ms": scan_ms,
        "scan_ms_per_1k_rows": scan_ms * _ROWS_PER_SCAN_UNIT / rows if rows else None,
        "scan_runs_ms": scan_runs_ms,
        "search_p50_ms": statistics.median(search_runs_ms),
        "search_runs_ms": search_runs_ms,
    }


def compacted_copy(uri: str, copy_uri: str) -> float:
    """Copy the table at ``uri`` to ``copy_uri`` and compact the copy fully (one version
    left); the seconds compaction took."""
    shutil.copytree(uri, copy_uri)
    started = time.perf_counter()
    copy = lance.dataset(copy_uri)
    copy.optimize.compact_files()
    copy.cleanup_old_versions(retain_versions=1)
    return time.perf_counter() - started


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def measure_storage(uri: str, work: Path, dim: int, seed: int) -> dict[str, Any]:
    """The table at ``uri`` as written and a compacted copy of it (made under ``work``): each
    one's :func:`read_figures`, and the ratios as-written / compacted."""
    queries = search_queries(SEARCH_WARMUP_QUERIES + SEARCH_QUERIES, dim, seed)
    written = read_figures(uri, queries)
    work.mkdir(parents=True, exist_ok=True)
    copy_uri = str(work / Path(uri).name)
    compact_s = compacted_copy(uri, copy_uri)
    compacted = read_figures(copy_uri, queries)
    return {
        "written": written,
        "compacted": compacted,
        "scan_ratio": _ratio(written["scan_ms"], compacted["scan_ms"]),
        "search_ratio": _ratio(written["search_p50_ms"], compacted["search_p50_ms"]),
        "compact_s": compact_s,
        "method": {
            "scan": (
                f"lance to_table(), every column, median of {SCAN_RUNS} "
                f"after {SCAN_WARMUP_RUNS} warm-up scan"
            ),
            "search": (
                f"lance to_table(nearest=...), brute force (no index), k={SEARCH_K}, "
                f"p50 of {SEARCH_QUERIES} queries after {SEARCH_WARMUP_QUERIES} warm-up queries"
            ),
            "compacted": "shutil.copytree, compact_files(), cleanup_old_versions(retain 1)",
        },
    }
