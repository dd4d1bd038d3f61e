"""Producer settings, declared once with their defaults and units."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lancequeue.common.errors import ConfigError
from lancequeue.common.keys import check_table_name
from lancequeue.common.protocol import MAX_PACKED_RECORDS


@dataclass(frozen=True)
class ProducerSettings:
    """How a producer reaches Redis and how long its records may wait."""

    table: str
    """The LanceDB table the records go to (one stream per table)."""
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    """Redis URL; None means ``$LANCEQUEUE_REDIS``, else the embedded server of ``data_dir``,
    which must be running (the writer starts it): a producer never starts a server, and raises
    ``RedisUnavailable`` at once, naming the remedies, if none runs."""
    data_dir: Path | str | None = None
    """Data directory of the embedded Redis server; None means the default data directory."""
    timeout_ms: int = 60_000
    """Default timeout of a record, counted from the enqueue call: its deadline. By then it must
    be in the stream (else it fails unsent: ``QueueFull`` if the queue stayed full,
    ``WriteTimeout`` if Redis stayed unreachable), and a writer must have built its batch (else
    the writer answers ``WriteTimeout`` and does not write it)."""
    close_timeout_ms: int = 30_000
    """How long ``close()`` waits for outstanding records to be answered."""
    chunk_records: int = 256
    """Most records the sender takes from the buffer per enqueue-script call (bounds one Redis
    command's size)."""
    chunk_bytes: int = 8 * 1024 * 1024
    """Most encoded record bytes sent per enqueue-script call; a record larger than this (but
    within ``max_record_bytes``) goes in a call of its own."""
    pack_records: int = 64
    """Most records packed into one stream entry (records sent in one enqueue-script call
    share entries, so Redis handles one entry per this many); 1 sends every record as an entry
    of its own. Every record still gets its own answer."""
    linger_ms: int = 0
    """An optional extra wait before the sender takes buffered records (Kafka's
    ``linger.ms``): until the oldest has waited this long or ``chunk_records`` are in, even
    after a quiet spell. Not needed for records to share sends: the sender takes what
    accumulated while its previous send was in flight and, while records keep coming, sends at
    most once per ``send_interval_ms``; a lone record goes at once."""
    send_interval_ms: int = 10
    """While records keep coming, the sender sends at most once per this many ms, unless
    ``chunk_records`` are buffered: a record enqueued after a quiet spell goes at once, and a
    steady stream of records shares sends instead of paying a Redis round trip each (at 1,000
    records/s, one send carries about ten). 0: send whenever the previous send is done."""
    max_buffered_records: int = 4096
    """The most records waiting in the producer to be sent: an enqueue that finds the buffer
    full waits for room until its deadline (bounds the producer's memory while the queue is
    full or Redis is unreachable)."""
    max_record_bytes: int = 1024 * 1024
    """Largest encoded record sent (the writer's ``--max-record-bytes`` default): a larger one
    fails at once with ``RecordRejected`` naming its size, and is never sent."""
    room_recheck_ms: int = 1000
    """While the queue is full, a producer's sender waits for the writer's flush message; it
    re-checks this often even without one (bounds a missed message, and how long past its
    timeout ``close()`` waits for a sender waiting for room)."""
    answer_grace_ms: int = 10_000
    """How long after a sent record's deadline the producer still waits for the writer's answer
    before failing it with ``WriteTimeout``: covers a batch built just before the deadline whose
    commit ends after it. Every future resolves by the deadline plus this (the reply listener
    checks about once a second), and so ``write``/``write_many`` return."""
    redis_timeout_ms: int = 5_000
    """How long connecting to Redis, or one command, may take before the producer counts the
    connection as lost: it reconnects and sends the unconfirmed records again."""

    def __post_init__(self) -> None:
        check_table_name(self.table)
        if self.data_dir is not None and not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        positive = (
            "timeout_ms",
            "close_timeout_ms",
            "chunk_records",
            "chunk_bytes",
            "pack_records",
            "max_buffered_records",
            "max_record_bytes",
            "room_recheck_ms",
            "redis_timeout_ms",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.pack_records > MAX_PACKED_RECORDS:
            raise ConfigError(
                f"pack_records must be at most {MAX_PACKED_RECORDS}, got {self.pack_records}"
            )
        for name in ("linger_ms", "send_interval_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.answer_grace_ms < 0:
            raise ConfigError(f"answer_grace_ms must not be negative, got {self.answer_grace_ms}")
