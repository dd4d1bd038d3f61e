"""Records read from files for ``lancequeue produce``: JSON Lines, CSV and Parquet, streamed.

Each reader yields ``(where, record)`` one record at a time (``where`` is ``file:line`` or
``file:row``), or ``(where, RecordRejected)`` for an entry that cannot be a record, so one bad
line never stops the others. Nothing reads a whole file into memory: Parquet is read one row
batch at a time.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lancequeue.common.errors import ConfigError, RecordRejected

Item = tuple[str, Any]
"""Where an entry came from, and the record (or the ``RecordRejected`` saying why not)."""

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 1024
"""Rows read from a Parquet file at a time."""


def file_format(path: str, forced: str | None) -> str:
    """The format of ``path`` ("-" is standard input): ``forced`` if given, else by suffix."""
    if forced is not None:
        return forced
    if path == "-":
        return "jsonl"
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found is None:
        raise ConfigError(
            f"{path}: cannot tell the format from its name; use --format ({', '.join(FORMATS)})"
        )
    return found


Columns = Mapping[str, str]
"""What each column of the table holds (``COLUMN_KINDS``), as its writer publishes it."""


def read_items(path: str, kind: str, columns: Columns | None = None) -> Iterator[Item]:
    """The entries of one file (or standard input for "-") in the given format; if the file
    cannot be read on (not UTF-8, not CSV, not Parquet...), a last ``RecordRejected`` says why
    and where, and the next file is read. ``columns`` types CSV cells by the table's columns;
    columns it does not name are typed by their cells."""
    where = "<stdin>" if path == "-" else path
    try:
        yield from _read(path, kind, columns or {})
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:  # pyarrow's too
        yield where, RecordRejected(f"cannot read on: {type(exc).__name__}: {exc}")


def _read(path: str, kind: str, columns: Columns) -> Iterator[Item]:
    if kind == "parquet":
        yield from _parquet(path)
        return
    if path == "-":
        yield from _text_items(kind, "<stdin>", sys.stdin, columns)
        return
    with open(path, newline="", encoding="utf-8") as handle:
        yield from _text_items(kind, path, handle, columns)


def _text_items(kind: str, name: str, lines: Any, columns: Columns) -> Iterator[Item]:
    return _jsonl(name, lines) if kind == "jsonl" else _csv(name, lines, columns)


def _jsonl(name: str, lines: Any) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"{name}:{number}", RecordRejected(f"not JSON: {exc}")


def _csv(name: str, lines: Any, kinds: Columns) -> Iterator[Item]:
    """Rows as records, a header row naming the columns. Each column gets one type: the
    table's (``kinds``: a text column's ``12345`` stays text), else, for a table that does
    not exist yet, one from its first ``CSV_SAMPLE_ROWS`` rows: integers, numbers, JSON lists
    (vectors: ``"[0.1, 0.2]"``) if every cell there reads as one, else text (so ``02134`` or
    ``nan`` stay text). An empty cell is null; a cell that does not read as its column's type
    rejects its row."""
    reader = csv.DictReader(lines)
    sample: list[tuple[str, dict[str, Any]]] = []
    for row in reader:
        sample.append((f"{name}:{reader.line_num}", row))
        if len(sample) == CSV_SAMPLE_ROWS:
            break
    columns = list(reader.fieldnames or [])
    parsers = {
        column: _TYPED.get(kinds.get(column, ""))
        or _column_parser([row.get(column) for _, row in sample])
        for column in columns
    }
    rest = ((f"{name}:{reader.line_num}", row) for row in reader)
    for where, row in itertools.chain(sample, rest):
        if None in row or any(value is None for value in row.values()):
            yield where, RecordRejected("the row does not have one cell per column of the header")
            continue
        try:
            yield where, {column: parsers[column](column, value) for column, value in row.items()}
        except ValueError as exc:
            yield where, RecordRejected(str(exc))


CSV_SAMPLE_ROWS = 1000
"""Rows of a CSV file read to choose each column's type."""
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")
Parser = Callable[[str, str], Any]


def _column_parser(cells: list[str | None]) -> Parser:
    present = [cell for cell in cells if cell]
    if present and all(_INTEGER.match(cell) for cell in present):
        return _parse_with(int, _INTEGER, "an integer")
    if present and all(_NUMBER.match(cell) for cell in present):
        return _parse_with(float, _NUMBER, "a number")
    if present and all(cell.startswith("[") for cell in present):
        return _parse_list
    return _parse_text


def _parse_with(convert: Callable[[str], Any], pattern: re.Pattern[str], what: str) -> Parser:
    def parse(column: str, text: str) -> Any:
        if text == "":
            return None
        if not pattern.match(text):
            raise ValueError(f"column {column!r} holds {what}, not {text[:40]!r}")
        return convert(text)

    return parse


def _parse_list(column: str, text: str) -> Any:
    if text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"column {column!r} holds JSON lists: {exc}") from exc
    if not isinstance(value, list):
        raise ValueError(f"column {column!r} holds JSON lists, not {text[:40]!r}")
    return value


def _parse_boolean(column: str, text: str) -> Any:
    if text == "":
        return None
    found = _BOOLEANS.get(text.strip().lower())
    if found is None:
        raise ValueError(f"column {column!r} holds true or false, not {text[:40]!r}")
    return found


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _parse_text(_: str, text: str) -> Any:
    return text if text != "" else None


_TYPED: dict[str, Parser] = {
    "string": _parse_text,
    "integer": _parse_with(int, _INTEGER, "an integer"),
    "number": _parse_with(float, _NUMBER, "a number"),
    "boolean": _parse_boolean,
    "list": _parse_list,
}
"""Parsers of the columns whose kind the table says (others are typed by their cells)."""


def _parquet(path: str) -> Iterator[Item]:
    # pyarrow only here, when a Parquet file is read: the producer library never loads it.
    import pyarrow.parquet as parquet

    row = 0
    with parquet.ParquetFile(path) as source:
        for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:{row}", record
