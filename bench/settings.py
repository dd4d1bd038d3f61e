"""The benchmark's settings, declared once with their defaults and units."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lancequeue.bench.records import DEFAULT_SEED, DEFAULT_TEXT_BYTES
from lancequeue.common.errors import ConfigError
from lancequeue.writer.settings import WriterSettings

TABLE = "bench"
"""Table name of every system's run (each in a database of its own)."""
PRODUCER_PATTERNS = ("many", "loop", "async-loop")
"""The producer processes' ways of calling (``python -m lancequeue.bench.producer_load
--pattern``; the writer package does not import the producer's)."""
WRITER_START_TIMEOUT_S = 60.0
"""Longest wait for the writer to announce itself running."""
PROCESS_START_TIMEOUT_S = 120.0
"""Longest wait for a producer to be ready (imports, records generated, connected)."""
STOP_TIMEOUT_S = 30.0
"""How long a child process may take to exit after SIGTERM before it gets SIGKILL."""


def _writer_default(name: str) -> Any:
    return WriterSettings.__dataclass_fields__[name].default


@dataclass(frozen=True)
class BenchSettings:
    """One ``lancequeue bench`` invocation."""

    producers: int = 4
    """Producer processes (K) of the end-to-end run."""
    records: int = 20_000
    """Records (N) in all, split across the producers."""
    dim: int = 384
    """Vector dimension of every record."""
    text_bytes: int = DEFAULT_TEXT_BYTES
    """Length of every record's text."""
    seed: int = DEFAULT_SEED
    """Seed of the record generator."""
    max_batch: int = field(default_factory=lambda: int(_writer_default("max_batch")))
    """Writer ``--max-batch``; also the batch size of baselines (b) and (c)."""
    coalesce_ms: int = field(default_factory=lambda: int(_writer_default("coalesce_ms")))
    """Writer ``--coalesce-ms``; also the coalescing window of baseline (b)."""
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    """An existing Redis to use; None starts a private ``redis-server``."""
    compare: bool = False
    """Also run the baselines (a) naive, (b) in-process coalescing, (c) the append limit."""
    naive_records: int = 2_000
    """Most records the naive baseline appends one by one."""
    callers: int = 512
    """Concurrent callers of baseline (b), each awaiting its record's future."""
    sweep: tuple[int, ...] = ()
    """Run only the end-to-end system, once per record count here."""
    rate: float = 0.0
    """Records/s all producers send together, paced (0: as fast as they can)."""
    records_per_call: int = 256
    """Records per ``Producer.enqueue_many`` call of each producer."""
    producer_pattern: str = "many"
    """How each producer process calls: ``many`` (``enqueue_many`` of ``records_per_call``),
    ``loop`` (a plain loop of ``Producer.enqueue``) or ``async-loop`` (a plain loop of
    ``await AsyncProducer.enqueue``)."""
    drain_batches: tuple[int, ...] = ()
    """Also time the writer alone draining a backlog of ``records`` at each of these
    ``--max-batch`` sizes, next to ``table.add`` of the same batches (drain mode)."""
    pattern_runs: tuple[str, ...] = ()
    """Also run one producer process per pattern here, each sending ``records`` to a live
    writer: its CPU per record, the way it calls (producer mode)."""
    out_path: Path = Path("bench.json")
    """Where every figure, parameter and machine fact is written."""
    chart_path: Path = Path("bench.png")
    """Where the chart goes (if matplotlib is installed)."""
    writer_flags: tuple[str, ...] = ()
    """Extra writer options, as command-line words (``--max-queue-size``, ``8192``, ...)."""
    producer_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``Producer`` keywords."""
    keep: bool = False
    """Keep the temporary directory (databases, logs) instead of removing it."""
    workdir: Path | None = None
    """Parent of the temporary directory; None is the system's."""
    sample_ms: int = 50
    """Interval of RSS and CPU sampling."""
    timeout_s: float = 600.0
    """Longest time one system's run may take before the benchmark gives up."""

    def __post_init__(self) -> None:
        positive = (
            "producers",
            "records",
            "dim",
            "max_batch",
            "coalesce_ms",
            "callers",
            "naive_records",
            "records_per_call",
            "sample_ms",
            "timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("text_bytes", "rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.producer_pattern not in PRODUCER_PATTERNS:
            raise ConfigError(
                f"producer_pattern must be one of {', '.join(PRODUCER_PATTERNS)}, "
                f"got {self.producer_pattern!r}"
            )
        if self.rate and self.producer_pattern != "many":
            raise ConfigError("--rate paces --producer-pattern many only: the loops go flat out")
        unknown = set(self.pattern_runs) - set(PRODUCER_PATTERNS)
        if unknown:
            raise ConfigError(
                f"producer modes are {', '.join(PRODUCER_PATTERNS)}, not {sorted(unknown)}"
            )
        if any(n <= 0 for n in self.drain_batches):
            raise ConfigError(f"every drain batch size must be positive, got {self.drain_batches}")
        if any(n <= 0 for n in self.sweep):
            raise ConfigError(f"every sweep record count must be positive, got {self.sweep}")
        try:
            if self.max_queue_size <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError("--max-queue-size must be a positive integer") from None
        if self.sweep and self.compare:
            raise ConfigError("--sweep runs lancequeue alone: use --compare or --sweep, not both")

    @property
    def max_queue_size(self) -> int:
        """The writer's queue bound (``--max-queue-size`` among ``writer_flags``, else its
        default); baseline (b)'s queue holds as many records before callers wait."""
        flags = list(self.writer_flags)
        if "--max-queue-size" in flags:
            return int(flags[flags.index("--max-queue-size") + 1])
        return int(_writer_default("max_queue_size"))

    def parameters(self) -> dict[str, Any]:
        """The settings as JSON values, for the report (the Redis URL only as given or not)."""
        values: dict[str, Any] = {}
        for settings_field in dataclasses.fields(self):
            value = getattr(self, settings_field.name)
            if settings_field.name == "redis_url":
                values["redis"] = "given" if value else "private redis-server"
            elif isinstance(value, Path):
                values[settings_field.name] = str(value)
            elif isinstance(value, tuple):
                values[settings_field.name] = list(value)
            else:
                values[settings_field.name] = value
        return values
