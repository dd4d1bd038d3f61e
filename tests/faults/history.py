"""The table's Lance history: which writer (fencing token, consumer) made each commit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lance

from lancequeue.writer.watermark import FENCE, WRITER


@dataclass(frozen=True)
class Commit:
    version: int
    operation: str
    fence: int | None
    """The fencing token the commit carries (None: not committed by a lancequeue writer)."""
    writer: str | None


def commits(db_uri: str, table: str) -> list[Commit]:
    """Every version of the table, oldest first, with what its transaction says."""
    dataset = lance.dataset(str(Path(db_uri) / f"{table}.lance"))
    found: list[Commit] = []
    for version in sorted(int(v["version"]) for v in dataset.versions()):
        transaction = dataset.read_transaction(version)
        properties = (transaction.transaction_properties or {}) if transaction else {}
        fence = properties.get(FENCE)
        operation = type(transaction.operation).__name__ if transaction else "?"
        found.append(
            Commit(
                version,
                operation,
                int(fence) if fence is not None and fence.isdigit() else None,
                properties.get(WRITER),
            )
        )
    return found
