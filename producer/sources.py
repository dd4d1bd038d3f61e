"""Records read from files for ``lancequeue produce``: JSON Lines, CSV and Parquet, streamed.

Each reader yields ``(where, record)`` one record at a time (``where`` is ``file:line`` or
``file:row``), or ``(where, RecordRejected)`` for an entry that cannot be a record, so one bad
line never stops the others. Nothing reads a whole file into memory: Parquet is read one row
batch at a time.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lancequeue.common.errors import ConfigError, RecordRejected

Item = tuple[str, Any]
"""Where an entry came from, and the record (or the ``RecordRejected`` saying why not)."""

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
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


def read_items(path: str, kind: str) -> Iterator[Item]:
    """The entries of one file (or standard input for "-") in the given format."""
    if kind == "parquet":
        yield from _parquet(path)
        return
    if path == "-":
        yield from (_jsonl if kind == "jsonl" else _csv)("<stdin>", sys.stdin)
        return
    with open(path, newline="", encoding="utf-8") as handle:
        yield from (_jsonl if kind == "jsonl" else _csv)(path, handle)


def _jsonl(name: str, lines: Any) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"{name}:{number}", RecordRejected(f"not JSON: {exc}")


def _csv(name: str, lines: Any) -> Iterator[Item]:
    """Rows as records: a header row names the columns; a cell is an integer, a number, a JSON
    list (a vector: ``"[0.1, 0.2]"``) or text, whichever it reads as; an empty cell is null."""
    reader = csv.DictReader(lines)
    for row in reader:
        where = f"{name}:{reader.line_num}"
        if None in row or any(value is None for value in row.values()):
            yield where, RecordRejected("the row does not have one cell per column of the header")
            continue
        try:
            yield where, {column: _cell(value) for column, value in row.items()}
        except ValueError as exc:
            yield where, RecordRejected(str(exc))


def _cell(text: str) -> Any:
    if text == "":
        return None
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a cell starting with '[' is not a JSON list: {exc}") from exc
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _parquet(path: str) -> Iterator[Item]:
    # pyarrow only here, when a Parquet file is read: the producer library never loads it.
    import pyarrow.parquet as parquet

    row = 0
    with parquet.ParquetFile(path) as source:
        for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:{row}", record
