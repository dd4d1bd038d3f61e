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

from lancequeue.common.entries import record_count
from lancequeue.common.keys import TableKeys
from tests.faults.check import (
    WRITER_ANSWERS,
    AckCounter,
    ProducerOutcomes,
    Tally,
    report,
    table_rows,
    tally,
)
from tests.faults.processes import LoadProcess, WriterDaemon, exit_status
from tests.redis_server import RestartableRedis
from tests.support import broken_storage, queued_entries, queued_entry_count, wait_for, within

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
PRODUCER_EXIT_SLACK_S = 35.0
"""How long after its close timeout a stopped load producer may take to exit."""
DRAIN_WAIT_S = 30.0
"""How long ``conclude`` waits for the writer to drain the stream once producers stopped."""
STOP_WAIT_S = 30.0
"""How long ``conclude`` waits for the writer to exit on SIGTERM before killing it."""
_FAILED_APPEND = re.compile(r"append of \d+ rows failed")
# What the writers' logs say they recovered (reported, not asserted).
_REPLAYED = re.compile(r"replaying (\d+) entries left pending")
_FROM_WATERMARK = re.compile(r"(\d+) pending entries are in the table already")


class FaultRig:
    """Processes and data of one fault test; ``close()`` kills whatever is still running."""

    def __init__(self, directory: Path, fault: str, persistence: bool = True) -> None:
        self.directory = directory
        self.fault = fault
        self.seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
        self.rng = random.Random(self.seed)
        print(f"{fault}: seed {self.seed} (replay with {SEED_ENV}={self.seed})")
        self.keys = TableKeys(TABLE)
        self.db_uri = str(directory / "db")
        self.redis = RestartableRedis(directory / "redis", persistence)
        self.writers: list[WriterDaemon] = []
        self.producers: list[LoadProcess] = []
        self.stop_file = directory / "stop-producers"
        self.rounds = 0
        self._client: redis.Redis | None = None
        self._acks: AckCounter | None = None
        self._close_timeout_s = 0.0
        self._reported = False
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

    def start_writer(
        self, *extra: str, crash_at: str | None = None, env: dict[str, str] | None = None
    ) -> WriterDaemon:
        """``lancequeue writer`` for the test's table with WRITER_ARGS, then ``extra`` (a later
        value of an option wins), with ``env`` added to its environment."""
        args = ["--redis", self.redis.url, "--db", self.db_uri, "--table", TABLE]
        name = f"writer-{len(self.writers)}"
        writer = WriterDaemon(
            name, [*args, *WRITER_ARGS, *extra], self.directory / f"{name}.log", crash_at, env
        )
        self.writers.append(writer)
        return writer

    def start_load(
        self,
        processes: int = PRODUCERS,
        rate: float = RATE_PER_PRODUCER,
        *,
        timeout_s: float = RECORD_TIMEOUT_S,
        grace_ms: int | None = None,
        close_timeout_s: float | None = None,
        max_records: int | None = None,
        chunk: int | None = None,
        hold_after: int | None = None,
        go_file: Path | None = None,
    ) -> list[LoadProcess]:
        """Start load producers (see ``tests.faults.load`` for the options); they run until
        ``finish`` or ``conclude`` (or until they sent ``max_records``). Returns those started
        by this call."""
        options: list[str] = []
        for flag, value in (
            ("--grace-ms", grace_ms),
            ("--close-timeout-s", close_timeout_s),
            ("--max-records", max_records),
            ("--chunk", chunk),
            ("--hold-after", hold_after),
            ("--go-file", go_file),
        ):
            if value is not None:
                options += [flag, str(value)]
        started: list[LoadProcess] = []
        for _ in range(processes):
            started.append(
                LoadProcess(
                    len(self.producers) + len(started),
                    self.redis.url,
                    TABLE,
                    self.directory,
                    self.stop_file,
                    rate,
                    timeout_s,
                    self.seed,
                    options,
                )
            )
        self.producers += started
        self._close_timeout_s = max(self._close_timeout_s, close_timeout_s or 30.0)
        self._acks = AckCounter([p.outcomes for p in self.producers])
        return started

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

    def wait_progress(
        self, records: int, what: str = "", timeout: float = PROGRESS_TIMEOUT_S
    ) -> None:
        """Wait until ``records`` more records than now are acknowledged ok."""
        target = self.acknowledged() + records
        self._check_producers()
        wait_for(
            lambda: self._check_producers() or self.acknowledged() >= target,
            timeout,
            f"{records} more records acknowledged {what}".strip(),
        )

    def progressed(self, records: int, timeout: float) -> bool:
        """``wait_progress`` that says whether it happened rather than failing."""
        target = self.acknowledged() + records
        return within(lambda: self.acknowledged() >= target, timeout)

    def _check_producers(self) -> bool:
        for producer in self.producers:
            if not producer.running():
                raise AssertionError(
                    f"{producer.name} exited {producer.process.returncode} during the load:\n"
                    f"{producer.log_tail()}"
                )
        return False

    def storage_outage(self, writer: WriterDaemon, seconds: float) -> None:
        """Break the table's storage until an append of ``writer`` failed and ``seconds`` have
        passed since the break, then mend it."""
        with broken_storage(self.db_uri, TABLE):
            began = time.monotonic()
            wait_for(lambda: _FAILED_APPEND.search(writer.log()), 30, "an append to fail")
            remaining_s = seconds - (time.monotonic() - began)
            if remaining_s > 0:
                time.sleep(remaining_s)  # the outage's length, not a wait for a condition

    def wait_exit(self, writer: WriterDaemon, timeout: float = START_TIMEOUT_S) -> int:
        return writer.wait(timeout)

    def outcomes(self) -> int:
        """Records answered so far (ok or not), over all producers."""
        return sum(len(ProducerOutcomes.read(p.outcomes).outcomes) for p in self.producers)

    def answered(self, producer: LoadProcess) -> bool:
        """Whether every record ``producer`` has handed to its Producer has been answered (an
        outcome other than ``ProducerClosed``)."""
        return ProducerOutcomes.read(producer.outcomes).answered()

    def records_in_stream(self) -> int:
        """Records waiting for the table now (in its stream or inbox; a packed entry counts its
        records), read or not."""

        def count(client: redis.Redis) -> int:
            entries = queued_entries(client, self.keys.table)
            return sum(record_count(fields) for fields in entries)

        return self.redis_call(count, 0)

    # -- the end -----------------------------------------------------------------------------

    def stream_drained(self) -> bool:
        """Nothing waiting in the stream, nothing read and not acked."""

        def check(client: redis.Redis) -> bool:
            if queued_entry_count(client, self.keys.table):
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
        return self._tally([])

    def conclude(
        self,
        writer: WriterDaemon | None,
        drain_timeout: float = DRAIN_WAIT_S,
        producer_timeout: float | None = None,
    ) -> Tally:
        """``finish`` for a test that expects things to go wrong: never fails before the table
        is checked. Stops the load and waits for the producers, waits (bounded) for a drained
        stream, stops ``writer`` with SIGTERM (SIGKILL if it does not exit), then compares
        outcomes with the table. Whatever went wrong on the way is in the row's ``failures``;
        ``assert_promises`` fails on them. A producer still running ``producer_timeout`` after
        it was told to stop (by default its close timeout plus ``PRODUCER_EXIT_SLACK_S``) is
        killed: its records without an outcome count as unanswered."""
        failures: list[str] = []
        self.stop_file.touch()
        if producer_timeout is None:
            producer_timeout = self._close_timeout_s + PRODUCER_EXIT_SLACK_S
        deadline = time.monotonic() + producer_timeout
        for producer in self.producers:
            code = exit_status(producer, max(0.1, deadline - time.monotonic()))
            if code != 0:
                failures.append(f"{producer.name} exited {code}")
        if writer is not None:
            if not writer.running():
                failures.append(f"{writer.name} had exited {writer.process.returncode}")
            elif not within(self.stream_drained, drain_timeout):
                failures.append(f"stream not drained in {drain_timeout}s: {self._stream_state()}")
            if writer.running():
                writer.signal(signal.SIGCONT)  # in case a test left it stopped
                writer.signal(signal.SIGTERM)
                code = exit_status(writer, STOP_WAIT_S)
                if code != 0:
                    failures.append(f"{writer.name} exited {code} on SIGTERM")
        return self._tally(failures)

    def _tally(self, failures: list[str]) -> Tally:
        result = tally(
            self.fault,
            self.rounds,
            [p.outcomes for p in self.producers],
            table_rows(self.db_uri, TABLE),
        )
        result.seed = self.seed
        result.failures = failures
        result.dead_letters = self.redis_call(lambda c: int(c.xlen(self.keys.dead_letters)), -1)
        result.dropped_as_duplicates = self.redis_call(
            lambda c: int(c.hget(self.keys.writer, "duplicates") or 0), -1
        )
        logs = "\n".join(w.log() for w in self.writers)
        result.replayed = sum(int(n) for n in _REPLAYED.findall(logs))
        result.settled_from_watermark = sum(int(n) for n in _FROM_WATERMARK.findall(logs))
        result.seconds = round(time.monotonic() - self._started, 1)
        report(result)
        self._reported = True
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

    def assert_promises(
        self,
        result: Tally,
        late_allowed: frozenset[str] = WRITER_ANSWERS,
        strangers_allowed: int = 0,
    ) -> None:
        """What a user is promised, whatever the fault: every record answered ok is in the
        table exactly once with its own content, no record answered "not written" is in it,
        every record got an answer, the processes ended well (``failures``), and every future
        whose outcome is not in ``late_allowed`` resolved by its deadline plus the answer grace
        (plus ``LATE_SLACK_S``)."""
        problems = [p for p in result.problems() if not p.startswith("strangers=")]
        if result.strangers > strangers_allowed:
            problems.append(f"strangers={result.strangers} (allowed {strangers_allowed})")
        late = result.late_beyond(late_allowed)
        if late:
            problems.append(f"futures resolved late: {late}")
        problems += result.failures
        assert not problems, (
            f"{self.fault}: {'; '.join(problems)}\nrow {result.row()}\n"
            + "\n".join(w.log_tail() for w in self.writers)
        )

    def close(self) -> None:
        """Kill whatever still runs. A test that failed before its check still reports its row
        (the check is made with the last writer still running, if any)."""
        if not self._reported and self.producers:
            try:
                self.redis.thaw_if_frozen()
                running = [w for w in self.writers if w.running()]
                self.conclude(
                    running[-1] if running else None, drain_timeout=10, producer_timeout=15
                )
            except Exception as exc:  # the test failed already; its own error is the one shown
                print(f"{self.fault}: no summary row: {type(exc).__name__}: {exc}")
        for process in [*self.producers, *self.writers]:
            process.close()
        if self._client is not None:
            self._client.close()
        self.redis.stop()


MakeRig = Callable[..., FaultRig]
"""The ``rig_for`` fixture: ``rig_for(fault, persistence=True)``, a started rig for the fault."""
