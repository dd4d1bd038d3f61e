"""What a record's future resolves to once the record is in the table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A written record's result, as LanceDB's ``table.add`` returns an ``AddResult``.

    ``version`` is the table version whose commit wrote the record (or, for a record an earlier
    writer committed before it crashed, a version the table had when it was answered): a
    reader that checks out this version, or waits until the table reaches it, sees the record::

        result = producer.write({"id": 1, "text": "hi"})
        table.checkout(result.version)  # lancedb: a view in which the row is visible

    A delete's future resolves to one too: the version from which its rows are gone. None if
    the writer did not say (a writer of an older version)."""

    version: int | None
