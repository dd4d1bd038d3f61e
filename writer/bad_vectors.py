"""Bad vectors, treated as LanceDB's ``table.add()`` treats them (its ``on_bad_vectors``).

A vector is bad when it holds NaN or has the wrong length. LanceDB refuses a NaN in any vector
column (a fixed-size list of floats) whatever its ``on_bad_vectors``; where that setting applies,
it instead drops the record, fills the vector (NaN and missing values become ``fill_value``, a
longer vector is cut) or writes null. It applies only on the Python path ``add()`` takes when
``on_bad_vectors`` is not ``error`` or the table has embedding functions, and there only to the
columns LanceDB takes for vector columns: those an embedding function fills, one named
``vector``, and a fixed-size one named ``embedding``. A null vector is not a bad one (``add()`` of
one record sees a column of nulls, not of lists), except where an embedding function gave none.

The writer does the same, record by record; a record ``drop`` drops is not in the table, so it is
answered ``RecordRejected`` saying so. Wrong lengths in other columns, and any NaN left, are
rejected when the batch's vector columns are built (``arrow_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lancequeue.common.errors import ConfigError

MODES = ("error", "drop", "fill", "null")
_VECTOR_NAMES = ("vector", "embedding")
"""Columns LanceDB applies ``on_bad_vectors`` to by name (``embedding`` when fixed-size)."""


def is_vector_type(data_type: pa.DataType) -> bool:
    """A vector column: a fixed-size list of floats."""
    return bool(
        pa.types.is_fixed_size_list(data_type) and pa.types.is_floating(data_type.value_type)
    )


@dataclass(frozen=True)
class BadVectorPolicy:
    """The writer's ``on_bad_vectors`` and ``fill_value``."""

    mode: str = "error"
    fill_value: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"on_bad_vectors must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        value = self.fill_value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"fill_value must be a finite number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"fill_value must be a finite number, got {value!r}")
        object.__setattr__(self, "fill_value", float(value))


class BadVectors:
    """Applies a policy to the records of one table schema, before the batch is built."""

    def __init__(
        self, schema: pa.Schema, policy: BadVectorPolicy, embedded: Collection[str] = ()
    ) -> None:
        self.policy = policy
        # add() takes its Python path, where on_bad_vectors applies, only in these cases.
        applies = policy.mode != "error" or bool(embedded)
        self._columns = [
            (field.name, field.type.list_size)
            for field in schema
            if applies and is_vector_type(field.type) and _named_vector(field.name, embedded)
        ]

    def apply(
        self,
        rows: list[dict[str, Any]],
        rejected: dict[int, str],
        computed: dict[tuple[int, str], str] | None = None,
    ) -> None:
        """Fix or reject each bad vector of ``rows`` (records not in ``rejected``): a fixed
        vector replaces the record in ``rows`` (a copy), a rejected record goes into
        ``rejected`` with its reason. ``computed`` maps (row, column) of each vector an
        embedding function computed to why it may be null: a bad vector there."""
        for name, dim in self._columns:
            for index, row in enumerate(rows):
                if index in rejected or name not in row:
                    continue  # a missing vector is not a bad one
                why = _badness(row[name], dim, (computed or {}).get((index, name)))
                if why is None:
                    continue
                mode = self.policy.mode
                if mode == "error":
                    rejected[index] = f"field {name!r}: {why} (on_bad_vectors=error)"
                elif mode == "drop":
                    rejected[index] = f"field {name!r}: {why}: dropped (on_bad_vectors=drop)"
                elif mode == "null":
                    rows[index] = {**row, name: None}
                elif isinstance(row[name], list) and not row[name]:
                    # add() types [] as a list of nulls, which it cannot fill: it refuses it.
                    rejected[index] = f"field {name!r}: {why}; an empty list is not filled"
                else:
                    rows[index] = {**row, name: _filled(row[name], dim, self.policy.fill_value)}


def _named_vector(name: str, embedded: Collection[str]) -> bool:
    return name in embedded or name in _VECTOR_NAMES


def _badness(value: Any, dim: int, why_null: str | None) -> str | None:
    """Why ``value`` is a bad vector of ``dim`` values, or None if it is not one (a good
    vector, a null given as null, or not a vector at all: the type checks reject that).
    ``why_null``: the value was computed, and why it may be null."""
    if value is None:
        return why_null
    numbers = numeric_vector(value)
    if numbers is None:
        return None
    if len(numbers) != dim:
        return f"{len(numbers)} values, not {dim}"
    if np.isnan(numbers).any():
        return "the vector holds NaN values"
    return None


def numeric_vector(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array if it is a list of numbers or a 1-D numeric array, else
    None."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "fiu":
            return None
        return value.astype(np.float64)
    if isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        try:
            return np.array(value, dtype=np.float64)
        except OverflowError:  # an int too large for a float: the type checks say so
            return None
    return None


def _filled(value: Any, dim: int, fill_value: float) -> np.ndarray:
    """As LanceDB fills a bad vector: cut to ``dim`` values, padded with ``fill_value``, NaN
    replaced by it; no vector at all (an embedding function gave none) is all ``fill_value``."""
    numbers = numeric_vector(value)
    filled = np.full(dim, fill_value, dtype=np.float64)
    if numbers is not None:
        kept = numbers[:dim]
        filled[: len(kept)] = np.where(np.isnan(kept), fill_value, kept)
    return filled
