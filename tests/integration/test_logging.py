"""The writer's logs: one line per lifecycle event, a periodic one-line summary, never a line
per record; JSON lines with ``--log-format json``."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis

from lancequeue.producer import Producer
from lancequeue.writer.summary import Summary
from tests.support import WriterProcess, record, wait_for, writer_alive

StartProcess = Callable[..., WriterProcess]


def _json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def _summarised(lines: list[dict[str, Any]], what: str) -> int:
    found = (re.search(rf"{what} ([\d,]+)", line["message"]) for line in lines)
    return sum(int(match.group(1).replace(",", "")) for match in found if match)


def _summarised_rows(lines: list[dict[str, Any]]) -> int:
    found = (re.search(r": ([\d,]+) rows in", line["message"]) for line in lines)
    return sum(int(match.group(1).replace(",", "")) for match in found if match)


def test_a_json_logging_writer_logs_lifecycle_events_and_summaries_not_records(
    writer_process: StartProcess,
    producer: Producer,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANCEQUEUE_LOG_FORMAT", "json")
    writer = writer_process("--coalesce-ms", "20", "--summary-every-s", "1", "--max-batch", "16")
    wait_for(lambda: writer_alive(client), 60, "the writer")
    producer.write_many([record(i) for i in range(300)], timeout=60)
    wait_for(
        lambda: _summarised_rows(_json_lines(writer.log())) == 300, 60, "summaries of 300 rows"
    )
    # 19 fragments of 16 rows: compaction ran, and is counted in a summary, not logged alone
    wait_for(lambda: _summarised(_json_lines(writer.log()), "compactions"), 60, "a compaction")
    writer.signal(signal.SIGTERM)
    assert writer.wait() == 0
    lines = _json_lines(writer.log())
    assert all(set(line) >= {"ts", "level", "logger", "message"} for line in lines)
    messages = [line["message"] for line in lines]
    assert any("serving table 'docs'" in message for message in messages)
    assert any(message.endswith("stopped") for message in messages)
    assert len([line for line in lines if line["level"] != "debug"]) < 40  # nothing per batch
    compactions = [line for line in lines if line["message"].startswith("compacted")]
    assert compactions and {line["level"] for line in compactions} == {"debug"}  # upkeep
    summaries = [message for message in messages if ": 0 rows in 0 batches" in message]
    assert all("compactions 0" not in message for message in summaries)  # none when idle
    assert " INFO lancequeue" not in writer.log()  # no text lines


def test_a_summary_line_counts_what_happened_since_the_last_one() -> None:
    now = [100.0]
    summary = Summary(clock=lambda: now[0])
    summary.add({"batches": 2, "rows": 200, "append_ms": 30, "rejected": 1})
    summary.add({"batches": 1, "rows": 100, "append_ms": 15, "duplicates": 4})
    now[0] += 10
    line = summary.line()
    assert line is not None
    assert line.startswith("last 10s: 300 rows in 3 batches (30 rows/s, mean append 15.0 ms)")
    assert "rejected 1," in line and "duplicates dropped 4," in line
    now[0] += 5
    assert summary.line() is None  # nothing happened: no line
    summary.add({"compactions": 2})
    now[0] += 5
    line = summary.line()
    assert line is not None and line.startswith("last 5s: 0 rows in 0 batches")
    assert line.endswith("compactions 2")
