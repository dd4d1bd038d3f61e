"""What each column of the table holds, in the words producers read from the config hash
(``CONFIG_COLUMNS``): so that ``lancequeue produce`` types CSV cells by the table, not by
guessing."""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa

from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import CONFIG_COLUMNS
from lancequeue.common.redis_client import REDIS_FAILURES, AsyncRedis
from lancequeue.writer.lease import Lease


async def publish_columns(
    redis: AsyncRedis, keys: TableKeys, lease: Lease, schema: pa.Schema | None
) -> bool:
    """Publish the table's columns in the config hash now and with every renewal of the lease,
    or, for a table that does not exist, drop those an earlier table left. Whether they were
    published (a Redis failure leaves it to the next try)."""
    with contextlib.suppress(*REDIS_FAILURES):
        if schema is None:
            await redis.hdel(keys.config, CONFIG_COLUMNS)
            return False
        lease.publish(CONFIG_COLUMNS, column_kinds(schema))
        await lease.renew()
        return True
    return False


def column_kinds(schema: pa.Schema) -> str:
    """The JSON object mapping each column of ``schema`` to its kind (``COLUMN_KINDS``)."""
    return json.dumps({field.name: _kind(field.type) for field in schema}, sort_keys=True)


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    ):
        return "list"
    return "other"
