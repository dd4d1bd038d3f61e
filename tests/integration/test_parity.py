"""Differential test: lancequeue writes rows as LanceDB's own ``table.add()`` would.

Hypothesis draws records, good and bad, for a few schemas. The same records go through
``table.add([record])`` one at a time on one table and through a real writer and ``Producer`` on
another. Every record must be accepted by both or refused by both, unless a named rule of
lancequeue's explains the difference (``tests/parity_rules.py``); and the rows both accepted
must be equal.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from lancequeue.common.errors import RecordRejected
from lancequeue.producer import Producer
from lancequeue.writer import Writer
from tests.lancedb_reference import add_one_by_one, reference_table, rows
from tests.parity_rules import SCHEMAS, lenient_rule, records_for, stricter_rule
from tests.support import WRITTEN

pytestmark = pytest.mark.timeout(300)

FILL_VALUE = 0.5
MODES = ["error", "drop", "fill", "null"]
PARITY = settings(
    max_examples=int(os.environ.get("LANCEQUEUE_PARITY_EXAMPLES", "100")),
    deadline=None,  # an example starts a writer: seconds on a loaded machine are no bug
    database=None,
    # The same examples every run, so CI passes or fails the same way each time;
    # LANCEQUEUE_HYPOTHESIS_EXPLORE=1 draws new ones (to hunt for differences, not in CI).
    derandomize=not os.environ.get("LANCEQUEUE_HYPOTHESIS_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLES = st.sampled_from(sorted(SCHEMAS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        records_for(SCHEMAS[name]),
        st.sampled_from(MODES) if name == "vectors" else st.just("error"),
    )
)
_tables = itertools.count()


@pytest.fixture(scope="module")
def parity_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield str(tmp_path_factory.mktemp("parity") / "db")


async def _through_lancequeue(
    redis_url: str, db_uri: str, table: str, schema: pa.Schema, records: list[Any], mode: str
) -> list[Any]:
    """Each record's answer from a real writer (created for this table, stopped after)."""
    writer = Writer(
        table=table,
        redis_url=redis_url,
        db_uri=db_uri,
        schema=schema,
        coalesce_ms=5,
        max_block_ms=50,
        on_bad_vectors=mode,
        fill_value=FILL_VALUE,
    )
    running = asyncio.create_task(writer.run())
    try:
        with Producer(table, redis_url=redis_url) as producer:
            futures = producer.enqueue_many(records, timeout=60)
            return await asyncio.wait_for(
                asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True), 60
            )
    finally:
        await writer.stop()
        await running


NAN = float("nan")
MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678)
BAD_VECTORS = [
    {"id": 0, "vector": [1.0, NAN, 0.0, 0.0]},
    {"id": 1, "vector": [1.0, 2.0]},
    {"id": 2, "vector": [1.0, None, 2.0, 3.0]},  # a vector of numbers only (stricter)
    {"id": 3, "emb": [NAN, 0.0, 0.0, 0.0]},  # not a column on_bad_vectors applies to
    {"id": 4, "vector": [], "emb": [1, 2, 3, 4]},
    {"id": 5, "vector": np.array([NAN, 1.0, 1.0, 1.0], dtype=np.float32), "emb": None},
    {"id": 6, "vector": [0.5, 1.0, 1.5, 2.0, 2.5]},
]


@PARITY
@given(example=EXAMPLES)
# Each rule and each on_bad_vectors mode, every run, whatever Hypothesis draws:
@example(
    example=(
        "scalars",
        [
            {"id": 0, "n": 1.5},  # lossy
            {"id": 1, "n": 2, "s": 5},  # of another kind
            {"id": 2, "n": 3, "extra": None},  # an unknown key with no value (lenient)
            {"id": 3, "n": 4, "f32": 1e300, "b": True},  # lossy
            {"id": 4, "n": 5, "f64": NAN, "f32": 2, "i32": -(2**31)},
            {"id": 5, "n": 6, "i32": 2**31},  # refused by both
        ],
        "error",
    )
)
@example(example=("vectors", BAD_VECTORS, "error"))
@example(example=("vectors", BAD_VECTORS, "drop"))
@example(example=("vectors", BAD_VECTORS, "fill"))
@example(example=("vectors", BAD_VECTORS, "null"))
@example(
    example=(
        "structs",
        [
            {"id": 0, "meta": {}},
            {"id": 1, "meta": {"a": None, "b": "x"}},
            {"id": 2, "meta": {"a": 1.5}},  # lossy
            {"id": 3, "meta": {"a": 1, "zz": 2}},
            {"id": 4, "meta": {"a": 1}},
            {"id": 5, "meta": None},
        ],
        "error",
    )
)
@example(
    example=(
        "lists",
        [
            {"id": 0, "tags": "abc"},  # of another kind
            {"id": 1, "nums": [1.5]},  # lossy
            {"id": 2, "tags": ["a", None], "nums": []},
        ],
        "error",
    )
)
@example(
    example=(
        "unsigned",
        [
            {"id": 0, "u": 2**63},  # add() refuses an int over 2**63-1, even for uint64
            {"id": 1, "us": [1, 2**64 - 1]},
            {"id": 2, "u": 2**63 - 1, "us": [0]},
        ],
        "error",
    )
)
@example(
    example=(
        "times",
        [
            {"id": 0, "d": MOMENT},  # lossy
            {"id": 1, "ts_s": MOMENT},  # lossy
            {"id": 2, "ts": MOMENT.date()},  # of another kind
            {
                "id": 3,
                "ts": MOMENT.replace(tzinfo=timezone(timedelta(hours=-5))),
                "d": MOMENT.date(),
            },
        ],
        "error",
    )
)
def test_records_are_accepted_refused_and_written_as_lancedb_s_add_does(
    redis_server: str, parity_db: str, example: tuple[str, list[dict[str, Any]], str]
) -> None:
    name, records, mode = example
    schema = SCHEMAS[name]
    table = f"{name}_{next(_tables)}"
    reference = reference_table(parity_db, f"{table}_add", schema)
    by_add = add_one_by_one(reference, records, on_bad_vectors=mode, fill_value=FILL_VALUE)
    answers = asyncio.run(
        _through_lancequeue(redis_server, parity_db, table, schema, records, mode)
    )
    by_lancequeue = [answer == WRITTEN for answer in answers]
    for record, added, queued, answer in zip(records, by_add, by_lancequeue, answers, strict=True):
        if added == queued:
            continue
        context = f"record {record!r} (on_bad_vectors={mode}): add() {added}, lancequeue {answer!r}"
        rule = stricter_rule(record, schema) if added else lenient_rule(record, schema)
        assert rule is not None, f"no rule explains the difference: {context}"
        if added:
            assert isinstance(answer, RecordRejected), context
        event(rule)
    both = {
        record["id"] for record, a, q in zip(records, by_add, by_lancequeue, strict=True) if a and q
    }
    written = rows(parity_db, table) if (Path(parity_db) / f"{table}.lance").exists() else []
    assert [row["id"] for row in written] == [
        record["id"] for record, queued in zip(records, by_lancequeue, strict=True) if queued
    ]
    assert [row for row in written if row["id"] in both] == rows(parity_db, f"{table}_add", both)
