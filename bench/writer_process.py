"""The writer of the end-to-end run: the real ``lancequeue writer`` CLI in a child process."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from lancequeue.bench.errors import BenchError
from lancequeue.bench.processes import Process, start_process, tail
from lancequeue.bench.settings import WRITER_START_TIMEOUT_S
from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import TableKeys
from lancequeue.writer.settings import WriterSettings

_SET_BY_BENCH = ("--table", "--redis", "--db", "--data-dir", "--max-batch", "--coalesce-ms")
_READY_POLL_S = 0.05


def writer_flags(options: Iterable[str]) -> tuple[str, ...]:
    """``KEY=VALUE`` writer options (``max-queue-size=8192``, ``--lease-ms=8000``) as command-line
    words, checked against the writer's settings; raises :class:`ConfigError` for an unknown
    option or one the benchmark sets itself."""
    known = {f.metadata["flag"] for f in dataclasses.fields(WriterSettings)}
    words: list[str] = []
    for option in options:
        key, equals, value = option.partition("=")
        flag = "--" + key.strip().lstrip("-").replace("_", "-")
        if not equals:
            raise ConfigError(f"writer option {option!r}: expected KEY=VALUE")
        if flag not in known:
            raise ConfigError(f"unknown writer option {flag}; see lancequeue writer --help")
        if flag in _SET_BY_BENCH:
            raise ConfigError(f"{flag} is set by the benchmark itself")
        words += [flag, value]
    return tuple(words)


def start_writer(
    redis_url: str,
    db_dir: Path,
    table: str,
    max_batch: int,
    coalesce_ms: int,
    extra_flags: Iterable[str],
    log: Path,
) -> Process:
    """Start ``lancequeue writer`` for ``table`` with its output in ``log``."""
    command = [sys.executable, "-c", "from lancequeue.cli import main; main()", "writer"]
    command += ["--redis", redis_url, "--db", str(db_dir), "--table", table]
    command += ["--max-batch", str(max_batch), "--coalesce-ms", str(coalesce_ms), *extra_flags]
    return start_process(command, log)


def wait_writer_ready(process: Process, client: redis.Redis, table: str, log: Path) -> None:
    """Until the writer holds the lease and says it is running; raises :class:`BenchError` if it
    exits or takes longer than ``WRITER_START_TIMEOUT_S``."""
    keys = TableKeys(table)
    deadline = time.monotonic() + WRITER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"writer exited with {process.returncode}; log:\n{tail(log)}")
        if client.hget(keys.writer, "state") == b"running" and client.exists(keys.lease):
            return
        time.sleep(_READY_POLL_S)  # poll the status hash: nothing announces the change
    raise BenchError(f"writer not ready after {WRITER_START_TIMEOUT_S}s; log:\n{tail(log)}")


def writer_counters(client: redis.Redis, table: str) -> dict[str, int]:
    """The writer's ``batches``, ``rows`` and ``append_ms`` counters from its status hash."""
    raw: dict[bytes, bytes] = client.hgetall(TableKeys(table).writer)  # type: ignore[assignment]
    return {name: int(raw.get(name.encode(), 0)) for name in ("batches", "rows", "append_ms")}


def delete_table_keys(client: redis.Redis, table: str) -> None:
    """Delete every key of ``table`` (after a run on a Redis the benchmark does not own)."""
    pattern = TableKeys(table).prefix + "*"  # table names hold no glob characters
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
