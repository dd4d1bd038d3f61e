"""Turning decoded records into one Arrow table for the table's schema.

Each record is checked against the schema on its own; a record that does not fit is rejected
with a message naming the field, and the others still make the batch. On the way in, records get
what LanceDB's ``table.add()`` would give them: dicts and lists for JSON columns as JSON text
(``json_columns``), the vectors the table's embedding functions compute (``embeddings``), bad
vectors refused, dropped, filled or nulled (``bad_vectors``).
Vector columns (fixed-size lists of floats) are built from one contiguous float buffer, never
from Python floats one by one.

The records of a columnar entry (``common/columns.py``) are built column by column: a column whose
values are all of a kind Arrow converts exactly (or not at all), a vector column arriving as
one array of the column's own type holding no NaN, a nullable column they leave out. If any
column of the entry is not of that kind (a value that needs a check, a JSON or computed column,
an unknown field, a NaN), the entry's records go the record-by-record way instead, so every
rule above holds for them alike and each rejection names its record and field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lancequeue.writer.bad_vectors import BadVectorPolicy, BadVectors, is_vector_type
from lancequeue.writer.embeddings import TableEmbeddings
from lancequeue.writer.json_columns import JsonColumns
from lancequeue.writer.schema_inference import is_empty
from lancequeue.writer.strict_values import uint64_over_int64, unchecked_types, value_problem

logger = logging.getLogger(__name__)

Records = list[dict[str, Any]]


class Block(Protocol):
    """A columnar entry's records (``entries.ColumnBlock``)."""

    columns: dict[str, Any]
    count: int


class Row(Protocol):
    """A record to build (``entries.Entry``): row ``part`` of ``block`` if that is set."""

    @property
    def block(self) -> Block | None: ...

    @property
    def part(self) -> int | None: ...

    def materialized(self) -> dict[str, Any] | None: ...


_ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


class BatchBuilder:
    """Builds Arrow tables of one schema from records, rejecting those that do not fit.

    The schema's metadata may name embedding functions (a table created from a ``LanceModel``
    with a ``VectorField``): they must be registered in this process, else ``ConfigError``.
    ``bad_vectors`` is the writer's ``on_bad_vectors`` (default: refuse them)."""

    def __init__(self, schema: pa.Schema, bad_vectors: BadVectorPolicy | None = None) -> None:
        self.schema = schema
        self._names = set(schema.names)
        self._unchecked = {
            field.name: unchecked_types(field.type) | {type(None)} for field in schema
        }
        self._json = JsonColumns(schema)
        self._embeddings = TableEmbeddings.of(schema)
        self._computed = self._embeddings.vector_columns if self._embeddings else set()
        self._bad_vectors = BadVectors(schema, bad_vectors or BadVectorPolicy(), self._computed)

    @property
    def computes(self) -> bool:
        """Whether building calls the table's embedding functions (slow: not on the loop)."""
        return self._embeddings is not None

    def build_rows(self, rows: Sequence[Row]) -> tuple[pa.Table | None, dict[int, str]]:
        """``build`` for rows that may come from columnar entries: the rows of one entry are
        built column by column when they can be (``_from_columns``), the others (and those
        rows, when they cannot) record by record. Rows keep their order."""
        pieces: list[pa.Table] = []
        rejected: dict[int, str] = {}
        start = 0
        while start < len(rows):
            block, end = rows[start].block, start + 1
            while end < len(rows) and rows[end].block is block:
                end += 1
            table = None
            if block is not None:
                positions = [rows[i].part or 0 for i in range(start, end)]
                table = self._from_columns(block, positions)
            if table is None:
                records = [rows[i].materialized() or {} for i in range(start, end)]
                table, bad = self.build(records)
                rejected.update({start + position: reason for position, reason in bad.items()})
            if table is not None:
                pieces.append(table)
            start = end
        if not pieces:
            return None, rejected
        return (pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)), rejected

    def _from_columns(self, block: Block, positions: list[int]) -> pa.Table | None:
        """The rows at ``positions`` of a columnar entry built column by column, or None if a
        column needs the record-by-record way (see the module's docstring)."""
        if self._json or self._embeddings is not None:
            return None
        columns = block.columns
        whole = len(positions) == block.count  # positions rise: then they are all of them
        for name, column in columns.items():
            if name not in self._names and not _all_empty(column, positions):
                return None  # an unknown field: named, record by record
        arrays: list[pa.Array] = []
        for field in self.schema:
            column = columns.get(field.name)
            if column is None:
                if not field.nullable:
                    return None
                arrays.append(pa.nulls(len(positions), field.type))
                continue
            array = (
                self._list_column(field, column if whole else [column[p] for p in positions])
                if isinstance(column, list)
                else _array_column(field, column if whole else column[positions])
            )
            if array is None:
                return None
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _list_column(self, field: pa.Field, values: list[Any]) -> pa.Array | None:
        if (
            is_vector_type(field.type)
            or not {type(v) for v in values} <= self._unchecked[field.name]
        ):
            return None
        if not field.nullable and any(value is None for value in values):
            return None
        try:
            array = pa.array(values, type=field.type)
        except _ARROW_ERRORS:
            return None
        return None if uint64_over_int64(array) else array

    def build(self, records: Records) -> tuple[pa.Table | None, dict[int, str]]:
        """Return the table of the records that fit (None if none do) and, for each record
        that does not, its index and the reason. Raises ``EmbeddingFailed`` if an embedding
        function fails (the batch cannot be built; nothing is the records' fault)."""
        rejected: dict[int, str] = {}
        for index, record in enumerate(records):
            reason = self._check_fields(record, self._computed)
            if reason is not None:
                rejected[index] = reason
        rows = list(records)  # a record given a vector is replaced by a copy, never changed
        if self._json:
            self._json.apply(rows, rejected)
        computed = self._embeddings.compute(rows, rejected) if self._embeddings else {}
        self._bad_vectors.apply(rows, rejected, computed)
        for index, row in enumerate(rows):  # computed vector columns may be required too
            if index not in rejected and (reason := self._check_required(row, self._computed)):
                rejected[index] = reason
        while True:
            keep = [i for i in range(len(rows)) if i not in rejected]
            if not keep:
                return None, rejected
            kept = [rows[i] for i in keep]
            columns: list[pa.Array] = []
            for field in self.schema:
                values = [row.get(field.name) for row in kept]
                column, bad = self._column(field, values)
                if bad:
                    for position, reason in bad.items():
                        rejected[keep[position]] = reason
                    break
                assert column is not None
                columns.append(column)
            else:
                return pa.Table.from_arrays(columns, schema=self.schema), rejected

    def _check_fields(self, record: dict[str, Any], computed: set[str]) -> str | None:
        for name, value in record.items():
            if name not in self._names and not is_empty(value):  # no value: nothing lost
                return (
                    f"unknown field {name!r}; the table's columns are "
                    f"{', '.join(self.schema.names) or '(none)'}"
                )
        return self._check_required(record, set(self._names) - computed)

    def _check_required(self, record: dict[str, Any], names: set[str]) -> str | None:
        for field in self.schema:
            if field.name in names and record.get(field.name) is None and not field.nullable:
                if field.name in record:
                    return f"field {field.name!r} is required and may not be null"
                return f"missing required field {field.name!r}"
        return None

    def _column(self, field: pa.Field, values: list[Any]) -> tuple[pa.Array | None, dict[int, str]]:
        if is_vector_type(field.type):
            return _vector_column(field, values)
        if {type(value) for value in values} <= self._unchecked[field.name]:
            try:
                array = pa.array(values, type=field.type)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                pass  # an int out of range: found below, value by value
            else:
                if not uint64_over_int64(array):
                    return array, {}
        lossy = {
            position: f"field {field.name!r}: {problem}"
            for position, value in enumerate(values)
            if value is not None and (problem := value_problem(value, field.type)) is not None
        }
        if lossy:
            return None, lossy
        try:
            return _arrow_array(values, field.type), {}
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        bad: dict[int, str] = {}
        for position, value in enumerate(values):
            try:
                _arrow_array([value], field.type)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad[position] = (
                    f"field {field.name!r}: expected {field.type}, got "
                    f"{type(value).__name__} ({exc})"
                )
        if not bad:  # the column fails only as a whole: reject all rather than loop forever
            bad = {
                p: f"field {field.name!r}: cannot convert to {field.type}"
                for p in range(len(values))
            }
        return None, bad


def _all_empty(column: Any, positions: list[int]) -> bool:
    """Whether a column has no value (null, an empty list or map) at any of ``positions``."""
    return isinstance(column, list) and all(is_empty(column[p]) for p in positions)


def _array_column(field: pa.Field, rows: Any) -> pa.Array | None:
    """A vector column from one array of its rows, if it is of the column's own type, one row
    per record, holding no NaN; else None."""
    if not is_vector_type(field.type):
        return None
    dim = field.type.list_size
    if (
        rows.ndim != 2
        or rows.shape[1] != dim
        or rows.dtype != field.type.value_type.to_pandas_dtype()
    ):
        return None
    if np.isnan(rows).any():
        return None  # the bad-vector policy decides, record by record
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), dim)


def _arrow_array(values: list[Any], data_type: pa.DataType) -> pa.Array:
    """``pa.array(values, type=data_type)``, also where an extension type (JSON) is nested in a
    struct or a list, which pyarrow cannot build from Python values: built as its storage
    type, then cast."""
    storage = _storage_type(data_type)
    if storage == data_type:
        return pa.array(values, type=data_type)
    return pa.array(values, type=storage).cast(data_type)


def _storage_type(data_type: pa.DataType) -> pa.DataType:
    if isinstance(data_type, pa.BaseExtensionType):
        return _storage_type(data_type.storage_type)
    if pa.types.is_struct(data_type):
        fields = [data_type.field(i) for i in range(data_type.num_fields)]
        return pa.struct([f.with_type(_storage_type(f.type)) for f in fields])
    if pa.types.is_list(data_type):
        return pa.list_(data_type.value_field.with_type(_storage_type(data_type.value_type)))
    if pa.types.is_large_list(data_type):
        value_field = data_type.value_field
        return pa.large_list(value_field.with_type(_storage_type(data_type.value_type)))
    return data_type


def _vector_column(field: pa.Field, values: list[Any]) -> tuple[pa.Array | None, dict[int, str]]:
    dim = field.type.list_size
    value_type = field.type.value_type.to_pandas_dtype()
    if all(
        type(value) is np.ndarray and value.dtype == value_type and value.shape == (dim,)
        for value in values
    ):
        # The common case: every vector arrived as raw bytes of the column's own type, each
        # a view over its record's buffer. One copy into one contiguous buffer, one NaN scan.
        flat = np.concatenate(values) if values else np.zeros(0, dtype=value_type)
        nan_rows = np.flatnonzero(np.isnan(flat).reshape(-1, dim).any(axis=1)) if dim else ()
        if len(nan_rows):
            return None, {int(position): _nan(field) for position in nan_rows}
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim), {}
    parts: list[np.ndarray] = []
    bad: dict[int, str] = {}
    nulls = False
    for position, value in enumerate(values):
        if value is None:
            nulls = True
            parts.append(np.zeros(dim, dtype=value_type))
            continue
        reason = _vector_problem(value, dim)
        if reason is not None:
            bad[position] = f"field {field.name!r}: {reason}"
            continue
        with np.errstate(over="ignore"):  # overflow is detected below and rejected
            vector = np.asarray(value, dtype=value_type)
        overflowed = value_type != np.float64 and not np.isfinite(vector).all()
        if overflowed and np.isfinite(np.asarray(value, dtype=np.float64)).all():
            bad[position] = f"field {field.name!r}: values out of range for {field.type}"
            continue
        if np.isnan(vector).any():
            bad[position] = _nan(field)
            continue
        parts.append(vector)
    if bad:
        return None, bad
    flat = pa.array(np.concatenate(parts) if parts else np.zeros(0, dtype=value_type))
    mask = pa.array([v is None for v in values]) if nulls else None
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask), {}


def _nan(field: pa.Field) -> str:
    return (
        f"field {field.name!r}: the vector holds NaN values, which LanceDB refuses (on_bad_vectors)"
    )


def _vector_problem(value: Any, dim: int) -> str | None:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            return f"expected a 1-D vector of {dim} floats, got an array of shape {value.shape}"
        if value.dtype.kind not in "fiu":
            return f"expected a vector of floats, got dtype {value.dtype}"
        length = len(value)
    elif isinstance(value, list):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return f"expected a vector of {dim} floats, got a list with non-numbers"
        length = len(value)
    else:
        return f"expected a vector of {dim} floats, got {type(value).__name__}"
    if length != dim:
        return f"expected a vector of {dim} floats, got {length}"
    return None
