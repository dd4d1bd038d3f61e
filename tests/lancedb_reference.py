"""LanceDB's own ``table.add()`` as the reference: what it accepts and the rows it writes.

A test writes the same records through ``add([record])``, one at a time, on one table and
through lancequeue on another, then compares what each accepted and the rows each holds.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.compute as pc


def add_one_by_one(table: Any, records: list[dict[str, Any]], **add_options: Any) -> list[bool]:
    """``table.add([record])`` for each record; whether each one landed. A record ``add``
    refuses (it raises) or drops (``on_bad_vectors="drop"``: no error, no row) did not."""
    landed: list[bool] = []
    for record in records:
        before = table.count_rows()
        try:
            table.add([record], **add_options)
        except Exception:  # any refusal: which one is add()'s business
            landed.append(False)
            continue
        landed.append(table.count_rows() > before)
    return landed


def reference_table(db_uri: str, name: str, schema: pa.Schema | Any) -> Any:
    """A new LanceDB table ``name`` of ``schema`` (a pyarrow schema or a LanceModel)."""
    return lancedb.connect(db_uri).create_table(name, schema=schema)


def rows(db_uri: str, name: str, ids: Collection[int] | None = None) -> list[dict[str, Any]]:
    """The rows of table ``name`` ordered by ``id`` (only those of ``ids`` if given: a value
    ``add()`` stored may not even convert to Python), NaN made comparable ("NaN")."""
    table = lancedb.connect(db_uri).open_table(name).to_arrow().sort_by("id")
    if ids is not None:
        table = table.filter(pc.is_in(table["id"], pa.array(sorted(ids), pa.int64())))
    return [_comparable(row) for row in table.to_pylist()]


def _comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    return value
