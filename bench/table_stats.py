"""What a system left in its table: rows, versions, fragments, and whether the ids are exactly
the records sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np


def dataset_path(db_dir: Path, table: str) -> str:
    """Where LanceDB keeps ``table`` of the database in ``db_dir``."""
    return str(db_dir / f"{table}.lance")


def table_stats(db_dir: Path, table: str) -> dict[str, Any]:
    """The table's row count, latest version, version count and fragment count."""
    dataset = lance.dataset(dataset_path(db_dir, table))
    return {
        "table_rows": dataset.count_rows(),
        "table_version": dataset.version,
        "versions": len(dataset.versions()),
        "fragments": len(dataset.get_fragments()),
    }


def check_ids(db_dir: Path, table: str, expected: int) -> dict[str, Any]:
    """Whether the table holds exactly ids ``0 .. expected - 1``, each once; how it differs."""
    dataset = lance.dataset(dataset_path(db_dir, table))
    ids = np.sort(dataset.to_table(columns=["id"]).column("id").to_numpy(zero_copy_only=False))
    unique = np.unique(ids)
    in_range = unique[(unique >= 0) & (unique < expected)]
    report = {
        "expected_rows": expected,
        "rows": int(ids.size),
        "duplicates": int(ids.size - unique.size),
        "missing": int(expected - in_range.size),
        "unexpected": int(unique.size - in_range.size),
    }
    report["ok"] = report["rows"] == expected and not (
        report["duplicates"] or report["missing"] or report["unexpected"]
    )
    return report
