"""Helpers shared by the tests: waiting on conditions, running the CLI in real processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import lancedb
import msgpack
import numpy as np
import redis

from lancequeue.common.codec import encode_record
from lancequeue.common.columns import decode_columns, encode_columns, encode_fields
from lancequeue.common.entries import columnar_entry_fields, entry_fields, record_count
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import FIELD_NONCE
from lancequeue.common.replies import Result, decode_results
from lancequeue.common.status import read_status
from lancequeue.producer.results import WriteResult
from lancequeue.writer import Writer
from lancequeue.writer.entries import Entry, read_entries

CLI = [sys.executable, "-c", "from lancequeue.cli import main; main()"]
INTERRUPTIBLE_CLI = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from lancequeue.cli import main; main()",
]
"""``CLI`` with Ctrl-C handled as in a terminal, for tests that send SIGINT: a suite started in
the background (``cmd &`` from a script) inherits SIGINT ignored, and so would the command."""
KEYS = TableKeys("docs")
"""The keys of the table most tests use."""
StartWriter = Callable[..., Writer]
"""The ``start_writer`` fixture: starts an in-process writer with the given settings."""
TESTS_DIR = Path(__file__).parent


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # poll


async def async_wait_for(
    condition: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)  # poll


class _Written:
    """Equal to any ``WriteResult``: what a written record's future resolves to, whatever the
    table version (``[WRITTEN] * 3 == results``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WriteResult)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "WRITTEN"


WRITTEN = _Written()


def record(i: int, dim: int = 8) -> dict[str, Any]:
    """A realistic record: an id, some text, a float32 vector."""
    rng = np.random.default_rng(i)
    return {"id": i, "text": f"document {i}", "vector": rng.random(dim, dtype=np.float32)}


def columnar_entry(
    keys: TableKeys, entry_id: bytes, producer: str, first: int, count: int
) -> list[Entry]:
    """The writer's records of one columnar entry of protocol version 5 (records ``first`` to
    ``first + count - 1`` of ``producer``), as ``read_entries`` makes them."""
    body = encode_columns([encode_fields(record(first + i)) for i in range(count)])
    fields: list[Any] = columnar_entry_fields(
        keys.reply(producer), first, count, body, 60_000, b"5"
    )
    fields += [FIELD_NONCE, b"12345678"]
    raw = {
        (name if isinstance(name, bytes) else str(name).encode()): (
            value if isinstance(value, bytes) else str(value).encode()
        )
        for name, value in zip(fields[::2], fields[1::2], strict=True)
    }
    return read_entries(keys, entry_id, raw)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lancequeue ARGS`` to completion, capturing its output."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env or cli_env(), timeout=120
    )


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LANCEQUEUE_REDIS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


FAULT_VARIABLES = (
    "LANCEQUEUE_CRASH_AT",
    "LANCEQUEUE_PAUSE_AT",
    "LANCEQUEUE_REFUSE",
    "LANCEQUEUE_FAIL",
)
"""The variables of ``tests/fault_points.py``."""


def fault_args(env: dict[str, str]) -> list[str]:
    """The writer options that put the fault points in, if ``env`` sets one of them."""
    return ["--import", "tests.fault_points"] if any(env.get(v) for v in FAULT_VARIABLES) else []


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (SIGSTOP): state ``T`` in /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


class WriterProcess:
    """``lancequeue writer`` as a real subprocess (with the fault points if its environment sets
    one)."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``command`` (default: ``CLI``) is the ``lancequeue`` to run, from ``cwd``."""
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/close()
        env = env or cli_env()
        self.process = subprocess.Popen(
            [*(command or CLI), "-v", "writer", *fault_args(env), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stopped(self) -> bool:
        """Whether it stopped itself at a pause point (``LANCEQUEUE_PAUSE_AT``)."""
        return process_stopped(self.process.pid)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._log.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def writer_alive(client: redis.Redis, table: str = "docs") -> bool:
    return bool(client.exists(f"lancequeue:{{{table}}}:lease"))


def pending_count(client: redis.Redis, table: str = "docs") -> int:
    """Records read by a writer and not yet acked (a packed entry counts its records)."""
    stream = TableKeys(table).stream
    try:
        pending: Any = client.xpending_range(stream, "writers", "-", "+", 1_000_000)
    except redis.ResponseError:  # no group yet
        return 0
    count = 0
    for item in pending:
        found: Any = client.xrange(stream, item["message_id"], item["message_id"])
        count += record_count(found[0][1]) if found else 1
    return count


def wait_until_pending(client: redis.Redis, count: int, timeout: float = 30.0) -> None:
    wait_for(lambda: pending_count(client) == count, timeout, f"{count} pending records")


def table_ids(db_uri: str, table: str = "docs") -> list[int]:
    """The ``id`` column of the table, sorted; [] if the table does not exist."""
    db = lancedb.connect(db_uri)
    if table not in db.list_tables().tables:
        return []
    ids = db.open_table(table).to_arrow().column("id").to_pylist()
    return sorted(ids)


@contextlib.contextmanager
def broken_storage(db_uri: str, table: str = "docs") -> Iterator[None]:
    """The table's data directory replaced by a file: writing data files fails with a real
    ``OSError`` until the block exits and the directory is put back."""
    data = Path(db_uri) / f"{table}.lance" / "data"
    aside = data.with_name("data.aside")
    data.rename(aside)
    data.write_text("storage is down")
    try:
        yield
    finally:
        data.unlink()
        aside.rename(data)


def table_versions(db_uri: str, table: str = "docs") -> int:
    return len(lancedb.connect(db_uri).open_table(table).list_versions())


def table_ids_with_nulls(db_uri: str) -> list[int | None]:
    return list(lancedb.connect(db_uri).open_table("docs").to_arrow().column("id").to_pylist())


async def writer_serving(client: redis.Redis, table: str = "docs") -> None:
    """Wait until a writer of the table announced itself (its settings are in Redis)."""
    keys = TableKeys(table)
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: client.hget(keys.writer, "state") == b"running"),
        what="the writer to serve",
    )


def pop_answers(
    client: redis.Redis, reply_key: str, count: int, timeout: float = 60.0
) -> dict[int, Result]:
    """Pop reply messages from ``reply_key`` until ``count`` results arrived, by seq."""
    results: dict[int, Result] = {}

    def more() -> bool:
        popped = client.blpop([reply_key], 1)
        if popped is not None:
            results.update((r.seq, r) for r in decode_results(popped[1]))
        return len(results) >= count

    wait_for(more, timeout, f"{count} answers")
    return results


def queued_records(client: redis.Redis, table: str = "docs") -> int:
    """Records waiting in the table's stream, as ``lancequeue status`` reports them."""
    return int(read_status(client, table)["queue_depth"])


def stream_entry(
    reply_key: str, seq: int, rec: bytes, ttl_ms: int = 600_000
) -> dict[bytes | str, bytes | str]:
    """A stream entry exactly as a producer sends it."""
    fields = entry_fields(reply_key, seq, rec, ttl_ms)
    return dict(zip(fields[::2], fields[1::2], strict=True))


def flush_recorder() -> tuple[list[list[dict[str, Any]]], Callable[[list[dict[str, Any]]], None]]:
    flushes: list[list[dict[str, Any]]] = []
    return flushes, flushes.append


async def resolve(future: concurrent.futures.Future[WriteResult], timeout: float = 30) -> None:
    await asyncio.wrap_future(future) if timeout is None else await asyncio.wait_for(
        asyncio.wrap_future(future), timeout
    )


async def gather(
    futures: list[concurrent.futures.Future[WriteResult]], timeout: float = 30
) -> list[Any]:
    return await asyncio.wait_for(
        asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True), timeout
    )


class FixedToken:
    """The lease a ``TableSink``'s writer holds, as far as the table is concerned: for tests of
    the sink without Redis."""

    def __init__(self, token: int = 1) -> None:
        self.token = token

    async def raise_token(self, floor: int) -> int:
        raise AssertionError(f"the table holds token {floor}; this test's writer has {self.token}")


def inbox_fields(element: bytes) -> dict[bytes, bytes]:
    """The fields of an inbox element (``protocol.INBOX_ELEMENT``), with ``at`` if it has one, as
    the writer's move makes them into a stream entry."""
    head, _, body = element.partition(b";")
    at, _, lengths = head.partition(b":")
    values, position = [], 0
    for length in lengths.split(b","):
        values.append(body[position : position + int(length)])
        position += int(length)
    fields = dict(zip(values[::2], values[1::2], strict=True))
    if at:
        fields[b"at"] = at
    return fields


def queued_entries(client: redis.Redis, table: str = "docs") -> list[dict[bytes, bytes]]:
    """The fields of every entry waiting for the table, in order: those the writer moved into
    its stream, then those still in the inbox."""
    keys = TableKeys(table)
    moved: Any = client.xrange(keys.stream)
    waiting: Any = client.lrange(keys.inbox, 0, -1)
    return [fields for _, fields in moved] + [inbox_fields(element) for element in waiting]


def queued_entry_count(client: redis.Redis, table: str = "docs") -> int:
    """Entries waiting for the table: in its stream or in the inbox."""
    keys = TableKeys(table)
    return int(client.xlen(keys.stream)) + int(client.llen(keys.inbox))


def entry_records(fields: dict[Any, Any]) -> list[bytes]:
    """The encoded records of one entry's fields, whatever its form: ``rec``, a packed entry's
    ``recs``, or a columnar entry's ``cols`` (each record encoded again from its row)."""

    def field(name: str) -> Any:
        return fields.get(name.encode(), fields.get(name))

    if field("recs") is not None:
        return list(msgpack.unpackb(field("recs")))
    if field("cols") is not None:
        count = int(field("n"))
        columns, problems = decode_columns(field("cols"), count)
        assert not problems, problems
        rows = [
            {name: column[i] for name, column in columns.items() if column[i] is not None}
            for i in range(count)
        ]
        return [encode_record(row) for row in rows]
    return [field("rec")]


def as_entry(fields: list[bytes | str]) -> dict[bytes, bytes]:
    """Field/value pairs (``entry_fields`` and the like) as the writer reads them from the
    stream: bytes both."""
    return {
        (k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
        for k, v in zip(fields[::2], fields[1::2], strict=True)
    }


def stream_ttls(client: redis.Redis) -> list[tuple[int, int, bytes]]:
    """(seq, ttl, record bytes) of each record in the stream (whatever its entry's form), in
    stream order."""
    found: list[tuple[int, int, bytes]] = []
    for fields in queued_entries(client):
        seq, ttl = int(fields[b"seq"]), int(fields[b"ttl"])
        found.extend((seq + i, ttl, data) for i, data in enumerate(entry_records(fields)))
    return found


def stream_records(client: redis.Redis) -> list[tuple[int, bytes]]:
    """(seq, record bytes) of each record in the stream, in stream order."""
    return [(seq, data) for seq, _, data in stream_ttls(client)]


def evalsha_calls(client: redis.Redis) -> int:
    """How many EVALSHA calls Redis has served (its command stats)."""
    stats: Any = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def padded(i: int, text_chars: int) -> dict[str, Any]:
    """``record(i)`` with a text of ``text_chars`` characters."""
    return {**record(i), "text": "x" * text_chars}


async def stream_holds(client: redis.Redis, count: int, what: str) -> list[tuple[int, int, bytes]]:
    """Wait until at least ``count`` records are in the stream (the producer's sender puts them
    there after ``enqueue`` returned); returns them all."""
    found: list[tuple[int, int, bytes]] = await asyncio.to_thread(
        wait_for, lambda: (held := stream_ttls(client)) and len(held) >= count and held, 30, what
    )
    return found


def within(condition: Callable[[], Any], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passed (False)."""
    try:
        wait_for(condition, timeout)
    except AssertionError:
        return False
    return True
