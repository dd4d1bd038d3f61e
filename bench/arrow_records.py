"""The benchmark's records as Arrow data, in the schema the writer infers from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def bench_schema(dim: int) -> pa.Schema:
    """``id`` int64, ``text`` string, ``vector`` fixed-size list of ``dim`` float32; nullable,
    as the writer infers them from the first batch."""
    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def records_to_arrow(records: Sequence[dict[str, Any]], dim: int) -> pa.Table:
    """One Arrow table of ``records`` (vectors stacked into one buffer, no per-value boxing)."""
    vectors = (
        np.stack([record["vector"] for record in records])
        if records
        else np.empty((0, dim), np.float32)
    )
    return pa.Table.from_arrays(
        [
            pa.array([record["id"] for record in records], pa.int64()),
            pa.array([record["text"] for record in records], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        ],
        schema=bench_schema(dim),
    )
