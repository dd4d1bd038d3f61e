"""Producers: send records to a LanceDB table's writer through a Redis stream.

Importing this package never imports lancedb or pyarrow.
"""

from lancequeue.common.errors import (
    LancequeueError,
    OutcomeUnknown,
    ProducerClosed,
    QueueFull,
    RecordRejected,
    RedisUnavailable,
    WriteFailed,
    WriteTimeout,
)
from lancequeue.producer.async_producer import AsyncProducer
from lancequeue.producer.producer import Producer
from lancequeue.producer.results import WriteResult
from lancequeue.producer.settings import ProducerSettings

__all__ = [
    "AsyncProducer",
    "LancequeueError",
    "OutcomeUnknown",
    "Producer",
    "ProducerClosed",
    "ProducerSettings",
    "QueueFull",
    "RecordRejected",
    "RedisUnavailable",
    "WriteFailed",
    "WriteResult",
    "WriteTimeout",
]
