"""One fault test's world: its own redis-server, a LanceDB directory, load producers, writers;
and the end of every test: stop the load, drain the stream, stop the writer, check the table."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from lancequeue.common.keys import TableKeys
from tests.faults.check import AckCounter, Tally, report, table_ids, tally
from tests.faults.processes import LoadProcess, WriterDaemon
from tests.redis_server import RestartableRedis
from tests.support import wait_for

T = TypeVar("T")

SEED_ENV = "LANCEQUEUE_FAULT_SEED"
TABLE = "docs"
WRITER_ARGS = ("--coalesce-ms", "50", "--max-batch", "64", "--lease-ms", "1000")
"""What every writer of the suite runs with, unless a test says otherwise."""
PRODUCERS = 3
RATE_PER_PRODUCER = 50.0
RECORD_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
"""How long a writer may take to start (imports, table, lease): generous for a loaded CI box."""
PROGRESS_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
"""How long producers may take to finish once told to stop: they wait for their answers."""
# What the writers' logs say they recovered (reported, not asserted).
_REPLAYED = re.compile(r"replaying (\d+) entries left pending")
_FROM_WATERMARK = re.compile(r"(\d+) pending entries are in the table already")


class FaultRig:
    """Processes and data of one fault test; ``close()`` kills whatever is still running."""

    def __init__(self, directory: Path, fault: str) -> None:
        self.directory = directory
        self.fault = fault
        self.seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
        self.rng = random.Random(self.seed)
        print(f"{fault}: seed {self.seed} (replay with {SEED_ENV}={self.seed})")
        self.keys = TableKeys(TABLE)
        self.db_uri = str(directory / "db")
        self.redis = RestartableRedis(directory / "redis")
        self.writers: list[WriterDaemon] = []
        self.producers: list[LoadProcess] = []
        self.stop_file = directory / "stop-producers"
        self.rounds = 0
        self._client: redis.Redis | None = None
        self._acks: AckCounter | None = None
        self._started = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> FaultRig:
        self.redis.start()
        return self

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.redis.url, socket_timeout=5, socket_connect_timeout=5
            )
        return self._client

    def start_writer(self, *extra: str, crash_at: str | None = None) -> WriterDaemon:
        """``lancequeue writer`` for the test's table with WRITER_ARGS, then ``extra``."""
        args = ["--redis", self.redis.url, "--db", self.db_uri, "--table", TABLE]
        name = f"writer-{len(self.writers)}"
        writer = WriterDaemon(
            name, [*args, *WRITER_ARGS, *extra], self.directory / f"{name}.log", crash_at
        )
        self.writers.append(writer)
        return writer

    def start_load(
        self, processes: int = PRODUCERS, rate: float = RATE_PER_PRODUCER
    ) -> list[LoadProcess]:
        """Start the load producers; they run until ``finish``."""
        for index in range(processes):
            self.producers.append(
                LoadProcess(
                    index,
                    self.redis.url,
                    TABLE,
                    self.directory,
                    self.stop_file,
                    rate,
                    RECORD_TIMEOUT_S,
                    self.seed,
                )
            )
        self._acks = AckCounter([p.outcomes for p in self.producers])
        return self.producers

    # -- watching ----------------------------------------------------------------------------

    def redis_call(self, call: Callable[[redis.Redis], T], default: T) -> T:
        """``call(client)``, or ``default`` while Redis is unreachable (being restarted)."""
        try:
            return call(self.client)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return default

    def lease(self) -> tuple[str, int] | None:
        """(consumer, token) of the writer holding the table's lease, if one does."""
        value = self.redis_call(lambda c: c.get(self.keys.lease), None)
        if not value:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        consumer, _, token = text.rpartition(" ")
        return consumer, int(token)

    def holds_lease(self, writer: WriterDaemon) -> tuple[str, int] | None:
        """The lease, if ``writer`` holds it (consumer names carry the process id)."""
        lease = self.lease()
        return lease if lease is not None and f"-{writer.pid}-" in lease[0] else None

    def wait_serving(self, writer: WriterDaemon) -> tuple[str, int]:
        """Wait until ``writer`` holds the lease; returns (consumer, token)."""

        def holding() -> tuple[str, int] | None:
            if not writer.running():
                raise AssertionError(
                    f"{writer.name} exited {writer.process.returncode} before serving:\n"
                    f"{writer.log_tail()}"
                )
            return self.holds_lease(writer)

        held: tuple[str, int] = wait_for(holding, START_TIMEOUT_S, f"{writer.name} to serve")
        return held

    def acknowledged(self) -> int:
        """Records acknowledged ok so far, over all producers."""
        assert self._acks is not None, "start_load() first"
        return self._acks()

    def wait_progress(self, records: int, what: str = "") -> None:
        """Wait until ``records`` more records than now are acknowledged ok."""
        target = self.acknowledged() + records
        self._check_producers()
        wait_for(
            lambda: self._check_producers() or self.acknowledged() >= target,
            PROGRESS_TIMEOUT_S,
            f"{records} more records acknowledged {what}".strip(),
        )

    def _check_producers(self) -> bool:
        for producer in self.producers:
            if not producer.running():
                raise AssertionError(
                    f"{producer.name} exited {producer.process.returncode} during the load:\n"
                    f"{producer.log_tail()}"
                )
        return False

    def wait_exit(self, writer: WriterDaemon, timeout: float = START_TIMEOUT_S) -> int:
        return writer.wait(timeout)

    # -- the end -----------------------------------------------------------------------------

    def stream_drained(self) -> bool:
        """Nothing waiting in the stream, nothing read and not acked."""

        def check(client: redis.Redis) -> bool:
            if client.xlen(self.keys.stream):
                return False
            groups: Any = client.xinfo_groups(self.keys.stream)
            return all(int(group["pending"]) == 0 for group in groups)

        return self.redis_call(check, False)

    def finish(self, writer: WriterDaemon) -> Tally:
        """Stop the load, wait for every answer and a drained stream, stop ``writer`` (it must
        exit 0), then compare outcomes with the table; report the row and return it."""
        self.stop_file.touch()
        for producer in self.producers:
            code = producer.wait(DRAIN_TIMEOUT_S)
            assert code == 0, f"{producer.name} exited {code}:\n{producer.log_tail()}"
        assert writer.running(), f"{writer.name} died:\n{writer.log_tail()}"
        try:
            wait_for(self.stream_drained, 30, "the stream to be drained")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self._stream_state()}\n{writer.log_tail()}") from None
        writer.signal(signal.SIGTERM)
        code = writer.wait(START_TIMEOUT_S)
        assert code == 0, f"{writer.name} exited {code} on SIGTERM:\n{writer.log_tail()}"
        assert self.stream_drained(), self._stream_state()
        result = tally(
            self.fault,
            self.rounds,
            [p.outcomes for p in self.producers],
            table_ids(self.db_uri, TABLE),
        )
        result.seed = self.seed
        result.dead_letters = self.redis_call(lambda c: int(c.xlen(self.keys.dead_letters)), -1)
        result.dropped_as_duplicates = self.redis_call(
            lambda c: int(c.hget(self.keys.writer, "duplicates") or 0), -1
        )
        logs = "\n".join(w.log() for w in self.writers)
        result.replayed = sum(int(n) for n in _REPLAYED.findall(logs))
        result.settled_from_watermark = sum(int(n) for n in _FROM_WATERMARK.findall(logs))
        result.seconds = round(time.monotonic() - self._started, 1)
        report(result)
        return result

    def _stream_state(self) -> str:
        def state(client: redis.Redis) -> str:
            return f"stream length {client.xlen(self.keys.stream)}, groups " + repr(
                client.xinfo_groups(self.keys.stream)
            )

        return self.redis_call(state, "redis unreachable")

    def assert_exactly_once(self, result: Tally) -> None:
        """No duplicate, nothing lost, nothing unanswered, no refused record in the table."""
        problems = result.problems()
        assert not problems, (
            f"{self.fault}: {', '.join(problems)}; row {result.row()}\n"
            + "\n".join(w.log_tail() for w in self.writers)
        )

    def close(self) -> None:
        for process in [*self.producers, *self.writers]:
            process.close()
        if self._client is not None:
            self._client.close()
        self.redis.stop()


MakeRig = Callable[[str], FaultRig]
"""The ``rig_for`` fixture: a started rig for the named fault."""
