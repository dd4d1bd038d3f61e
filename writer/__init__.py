"""The writer daemon: owns a LanceDB table and appends coalesced batches from its stream."""

from lancequeue.writer.settings import WriterSettings
from lancequeue.writer.writer import Writer

__all__ = ["Writer", "WriterSettings"]
