"""The checker: what the producers were told against what the table holds.

Every record acknowledged ok must be in the table exactly once, with its own content; every
record answered with an error that means "not written" must be absent; every record sent must
have been answered; and every future must have resolved by its deadline plus the answer grace
(plus a small slack), unless the test allows an answer that waits for the writer. One summary
row per test goes to stdout, to the session's closing summary, and, if
``LANCEQUEUE_FAULT_REPORT`` names a file, appended to it as a JSON line.

A record is known by its id and a digest of its content (``load.digest``), so a row with the
right id and someone else's content (a forged entry) is not taken for the record.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lancedb
import numpy as np

from tests.faults.load import digest

REPORT_ENV = "LANCEQUEUE_FAULT_REPORT"
ROWS: list[dict[str, Any]] = []
"""The rows reported in this session (printed at its end by the suite's conftest)."""
_SAMPLE = 10

CLOSED_UNSENT = "ProducerClosed:unsent"
"""The outcome of a record its producer gave up at close before sending it (still buffered, or
its send met a full queue or an unreachable Redis): the producer says it was not written and
will not be. The outcome file names it ``ProducerClosed``; its message tells it apart."""
NOT_WRITTEN = frozenset(
    {
        "RecordRejected",
        "WriteFailed",
        "QueueFull",
        "WriteTimeout",
        "RedisUnavailable",
        CLOSED_UNSENT,
    }
)
"""Errors that say the record is not in the table (and never will be)."""
MAYBE_WRITTEN = frozenset({"OutcomeUnknown"})
"""Errors that honestly say the record may or may not be in the table."""
UNANSWERED = frozenset({"ProducerClosed"})
"""What a record gets when its producer closed after sending it, before anyone answered it."""
_UNSENT_MESSAGE = "closed before the record was sent"
"""What the message of ``CLOSED_UNSENT`` says (``lancequeue.producer.sending.closed_unsent``)."""
WRITER_ANSWERS = frozenset({"ok", "RecordRejected", "WriteFailed", "WriteTimeout"})
"""Outcomes a writer gives: a record whose batch the writer had taken (claimed) waits for the
writer's true answer, which may come after its deadline plus the grace."""
LATE_SLACK_S = 1.5
"""How long after its deadline plus the answer grace a future may resolve and still count as in
time (the producer checks about once a second, and may spend up to a second abandoning it)."""

Row = tuple[int, str]
"""A record as the table holds it: (id, digest of its content)."""


@dataclass
class ProducerOutcomes:
    """One load process's outcome file."""

    path: Path
    first_id: int | None = None
    sent: int | None = None
    enqueued: set[int] = field(default_factory=set)
    outcomes: dict[int, str] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    late_s: dict[int, float] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ProducerOutcomes:
        read = cls(path)
        if not path.exists():
            return read
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:  # the last line of a process killed mid-write
                continue
            if item.get("done"):
                read.first_id, read.sent = int(item["first_id"]), int(item["sent"])
            elif "enqueued" in item:
                first = int(item["enqueued"])
                read.enqueued.update(range(first, first + int(item["count"])))
            else:
                record_id = int(item["id"])
                outcome = str(item["outcome"])
                if outcome == "ProducerClosed" and _UNSENT_MESSAGE in item.get("message", ""):
                    outcome = CLOSED_UNSENT
                read.outcomes[record_id] = outcome
                if "digest" in item:
                    read.digests[record_id] = str(item["digest"])
                if "late_s" in item:
                    read.late_s[record_id] = float(item["late_s"])
        return read

    @property
    def done(self) -> bool:
        return self.sent is not None

    def sent_ids(self) -> list[int]:
        """The ids handed to the producer (all of them, if the process was killed)."""
        if self.first_id is not None and self.sent is not None:
            return list(range(self.first_id, self.first_id + self.sent))
        return sorted(self.enqueued | set(self.outcomes))

    def answered(self) -> bool:
        """Whether every record handed to the producer so far has been answered (an outcome
        other than its producer closing on it)."""
        return all(
            self.outcomes.get(i, "ProducerClosed") not in UNANSWERED for i in self.sent_ids()
        )


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
    """Records answered ok whose own row (id and content) is not in the table."""
    unanswered: int = 0
    phantoms: int = 0
    """Records answered with an error meaning "not written" that are in the table anyway."""
    strangers: int = 0
    """Rows in the table that no producer sent (by id and content)."""
    late: int = 0
    """Futures that resolved more than LATE_SLACK_S after their deadline plus the grace."""
    late_outcomes: dict[str, int] = field(default_factory=dict)
    """What the late futures resolved to."""
    latest_s: float | None = None
    """The latest any future resolved, in seconds after its deadline plus the grace."""
    dead_letters: int = 0
    replayed: int = 0
    """Entries writers found left pending by an earlier writer (from the writers' logs)."""
    settled_from_watermark: int = 0
    """Of those, entries already in the table: answered from the watermark, not written again."""
    dropped_as_duplicates: int = 0
    """Entries the last writer acked as re-sent copies (its status hash): without a lost
    connection no producer re-sends, so anything here was dropped wrongly."""
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    """What went wrong around the check: a process that exited badly, a stream left undrained."""
    samples: dict[str, list[int]] = field(default_factory=dict)
    """A few ids of each kind of problem, to start an investigation from."""

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        for name in ("samples", "failures", "late_outcomes"):
            if not row[name]:
                del row[name]
        return row

    def problems(self) -> list[str]:
        names = ("duplicates", "lost", "unanswered", "phantoms", "strangers")
        return [f"{name}={getattr(self, name)}" for name in names if getattr(self, name)]

    def late_beyond(self, allowed: Iterable[str]) -> dict[str, int]:
        """The late futures whose outcome is not in ``allowed``, by outcome."""
        allowed = set(allowed)
        return {k: v for k, v in self.late_outcomes.items() if k not in allowed}


def table_rows(db_uri: str, table: str) -> list[Row]:
    """Every row of the table as (id, digest of its content), duplicates included ([] if there
    is no table)."""
    db = lancedb.connect(db_uri)
    if table not in db.list_tables().tables:
        return []
    data = db.open_table(table).to_arrow()
    if data.num_rows == 0:
        return []
    ids = [int(i) for i in data.column("id").to_pylist()]
    texts = [str(t) for t in data.column("text").to_pylist()]
    vectors = data.column("vector").combine_chunks()
    flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype="<f4")
    flat = flat.reshape(len(ids), -1)
    return [
        (record_id, digest(record_id, text, flat[index].tobytes()))
        for index, (record_id, text) in enumerate(zip(ids, texts, strict=True))
    ]


def table_ids(db_uri: str, table: str) -> list[int]:
    """Every ``id`` in the table, duplicates included ([] if there is no table)."""
    return [record_id for record_id, _ in table_rows(db_uri, table)]


def tally(fault: str, rounds: int, outcome_files: list[Path], rows_in_table: list[Row]) -> Tally:
    """Compare the producers' outcome files with the table's rows."""
    result = Tally(fault, rounds)
    in_table = Counter(rows_in_table)
    result.in_table = len(rows_in_table)
    sent: set[Row] = set()
    errors: Counter[str] = Counter()
    late: Counter[str] = Counter()
    lost: list[int] = []
    phantoms: list[int] = []
    unanswered: list[int] = []
    for path in outcome_files:
        outcomes = ProducerOutcomes.read(path)
        ids = outcomes.sent_ids()
        result.sent += len(ids)
        for record_id in ids:
            outcome = outcomes.outcomes.get(record_id)
            own = (record_id, outcomes.digests.get(record_id, ""))
            sent.add(own)
            late_s = outcomes.late_s.get(record_id)
            if outcome is not None and late_s is not None:
                result.latest_s = max(late_s, result.latest_s or late_s)
                if late_s > LATE_SLACK_S:
                    late[outcome] += 1
            if outcome is None or outcome in UNANSWERED:
                unanswered.append(record_id)  # closed before the writer answered it
                if outcome is not None:
                    errors[outcome] += 1
            elif outcome == "ok":
                result.acknowledged += 1
                if in_table[own] == 0:
                    lost.append(record_id)
            else:
                errors[outcome] += 1
                if outcome in NOT_WRITTEN and in_table[own]:
                    phantoms.append(record_id)
    duplicated = sorted(row for row, count in in_table.items() if count > 1)
    strangers = sorted(row for row in in_table if row not in sent)
    result.errors = dict(errors)
    result.late, result.late_outcomes = sum(late.values()), dict(late)
    result.duplicates = sum(in_table[row] - 1 for row in duplicated)
    result.lost, result.phantoms = len(lost), len(phantoms)
    result.unanswered, result.strangers = len(unanswered), len(strangers)
    for name, ids_ in (
        ("duplicated", [record_id for record_id, _ in duplicated]),
        ("lost", lost),
        ("phantoms", phantoms),
        ("unanswered", unanswered),
        ("strangers", [record_id for record_id, _ in strangers]),
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
    late = ",".join(f"{k}:{v}" for k, v in sorted(row.get("late_outcomes", {}).items()))
    failures = "; ".join(row.get("failures", []))
    return (
        f"{row['fault']:<28} rounds {row['rounds']:>2}  sent {row['sent']:>5}  "
        f"acked {row['acknowledged']:>5}  errors {errors}  in table {row['in_table']:>5}  "
        f"dup {row['duplicates']}  lost {row['lost']}  phantoms {row['phantoms']}  "
        f"unanswered {row['unanswered']}  late {row['late']}{f' ({late})' if late else ''}  "
        f"latest {row['latest_s']}s  "
        f"replayed {row['replayed']} (from watermark {row['settled_from_watermark']})  "
        f"dropped as copies {row['dropped_as_duplicates']}  {row['seconds']:.1f}s  "
        f"seed {row['seed']}{f'  FAILED: {failures}' if failures else ''}"
    )
