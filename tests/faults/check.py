"""The checker: what the producers were told against what the table holds.

Every record acknowledged ok must be in the table exactly once, every record answered with an
error must be absent, and every record sent must have been answered. One summary row per test
goes to stdout, to the session's closing summary, and, if ``LANCEQUEUE_FAULT_REPORT`` names a
file, appended to it as a JSON line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lancedb

REPORT_ENV = "LANCEQUEUE_FAULT_REPORT"
ROWS: list[dict[str, Any]] = []
"""The rows reported in this session (printed at its end by the suite's conftest)."""
_SAMPLE = 10


@dataclass
class ProducerOutcomes:
    """One load process's outcome file."""

    path: Path
    first_id: int | None = None
    sent: int | None = None
    outcomes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ProducerOutcomes:
        read = cls(path)
        if not path.exists():
            return read
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("done"):
                read.first_id, read.sent = int(item["first_id"]), int(item["sent"])
            else:
                read.outcomes[int(item["id"])] = str(item["outcome"])
        return read

    @property
    def done(self) -> bool:
        return self.sent is not None

    def sent_ids(self) -> range:
        assert self.first_id is not None and self.sent is not None, f"{self.path} is not done"
        return range(self.first_id, self.first_id + self.sent)


class AckCounter:
    """Counts ``ok`` outcomes across outcome files as they grow (reads only what is new)."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._offsets = dict.fromkeys(paths, 0)
        self._count = 0

    def __call__(self) -> int:
        for path in self._paths:
            if not path.exists():
                continue
            with path.open("rb") as source:
                source.seek(self._offsets[path])
                chunk = source.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
            self._offsets[path] += len(complete)
            self._count += complete.count(b'"outcome": "ok"')
        return self._count


@dataclass
class Tally:
    """One test's summary row."""

    fault: str
    rounds: int
    seed: int | None = None
    sent: int = 0
    acknowledged: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_table: int = 0
    duplicates: int = 0
    lost: int = 0
    unanswered: int = 0
    phantoms: int = 0
    """Records answered with an error that are in the table anyway."""
    strangers: int = 0
    """Rows in the table that no producer sent."""
    dead_letters: int = 0
    replayed: int = 0
    """Entries writers found left pending by an earlier writer (from the writers' logs)."""
    settled_from_watermark: int = 0
    """Of those, entries already in the table: answered from the watermark, not written again."""
    dropped_as_duplicates: int = 0
    """Entries the last writer acked as re-sent copies (its status hash): without a lost
    connection no producer re-sends, so anything here was dropped wrongly."""
    seconds: float = 0.0
    samples: dict[str, list[int]] = field(default_factory=dict)
    """A few ids of each kind of problem, to start an investigation from."""

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        if not row["samples"]:
            del row["samples"]
        return row

    def problems(self) -> list[str]:
        names = ("duplicates", "lost", "unanswered", "phantoms", "strangers")
        return [f"{name}={getattr(self, name)}" for name in names if getattr(self, name)]


def table_ids(db_uri: str, table: str) -> list[int]:
    """Every ``id`` in the table, duplicates included ([] if there is no table)."""
    db = lancedb.connect(db_uri)
    if table not in db.list_tables().tables:
        return []
    return [int(i) for i in db.open_table(table).to_arrow().column("id").to_pylist()]


def tally(fault: str, rounds: int, outcome_files: list[Path], ids_in_table: list[int]) -> Tally:
    """Compare the producers' outcome files (all done) with the table's ids."""
    result = Tally(fault, rounds)
    in_table = Counter(ids_in_table)
    result.in_table = len(ids_in_table)
    sent: set[int] = set()
    errors: Counter[str] = Counter()
    lost: list[int] = []
    phantoms: list[int] = []
    unanswered: list[int] = []
    for path in outcome_files:
        outcomes = ProducerOutcomes.read(path)
        ids = outcomes.sent_ids()
        sent.update(ids)
        result.sent += len(ids)
        for record_id in ids:
            outcome = outcomes.outcomes.get(record_id)
            if outcome is None or outcome == "ProducerClosed":
                unanswered.append(record_id)  # closed before the writer answered it
            elif outcome == "ok":
                result.acknowledged += 1
                if in_table[record_id] == 0:
                    lost.append(record_id)
            else:
                errors[outcome] += 1
                if in_table[record_id]:
                    phantoms.append(record_id)
    duplicated = sorted(i for i, count in in_table.items() if count > 1)
    strangers = sorted(i for i in in_table if i not in sent)
    result.errors = dict(errors)
    result.duplicates = sum(in_table[i] - 1 for i in duplicated)
    result.lost, result.phantoms = len(lost), len(phantoms)
    result.unanswered, result.strangers = len(unanswered), len(strangers)
    for name, ids_ in (
        ("duplicated", duplicated),
        ("lost", lost),
        ("phantoms", phantoms),
        ("unanswered", unanswered),
        ("strangers", strangers),
    ):
        if ids_:
            result.samples[name] = sorted(ids_)[:_SAMPLE]
    return result


def report(result: Tally) -> None:
    """Print the row, keep it for the session summary, append it to $LANCEQUEUE_FAULT_REPORT."""
    row = result.row()
    line = json.dumps(row, sort_keys=False)
    print(f"fault summary: {line}")
    ROWS.append(row)
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def format_row(row: dict[str, Any]) -> str:
    errors = ",".join(f"{k}:{v}" for k, v in sorted(row.get("errors", {}).items())) or "-"
    return (
        f"{row['fault']:<28} rounds {row['rounds']:>2}  sent {row['sent']:>5}  "
        f"acked {row['acknowledged']:>5}  in table {row['in_table']:>5}  "
        f"dup {row['duplicates']}  lost {row['lost']}  unanswered {row['unanswered']}  "
        f"errors {errors}  replayed {row['replayed']} (from watermark "
        f"{row['settled_from_watermark']})  dropped as copies {row['dropped_as_duplicates']}  "
        f"{row['seconds']:.1f}s  seed {row['seed']}"
    )
