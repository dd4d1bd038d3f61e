"""The calls of :class:`~lancequeue.producer.core.Op` that are one Redis command each, for
both drivers: redis-py's sync and asyncio clients share their method names, so the same call
gives the answer (sync) or an awaitable of it (asyncio)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lancequeue.common.lua_scripts import lua_script
from lancequeue.common.protocol import CONFIG_WRITER_UNTIL
from lancequeue.producer.calls import Op
from lancequeue.producer.core import ProducerCore

Client = Callable[[], Any]
"""Returns the client (or registered script) to call: the asyncio driver makes them at start."""


def redis_commands(
    core: ProducerCore[Any],
    sender: Client,
    replies: Client,
    enqueue_script: Client,
    abandon_script: Client,
) -> dict[Op, Callable[..., Any]]:
    """What each one-command :class:`Op` calls: ``sender`` sends records, ``replies`` reads
    the answers, the scripts are registered on the clients that run them."""
    keys, outbox = core.keys, core.outbox
    return {
        Op.READ_CONFIG: lambda: _hgets(sender(), keys.config, outbox.entries.config_fields),
        Op.READ_EPOCH: lambda: sender().get(keys.epoch),
        # One script: the clock it compares with is the config hash's node's, in a cluster too.
        Op.READ_WRITER: lambda: sender().register_script(WRITER_UNTIL_SCRIPT)(
            keys=[keys.config], args=[CONFIG_WRITER_UNTIL]
        ),
        Op.SET_EPOCH: lambda epoch: sender().setnx(keys.epoch, epoch),
        Op.ENQUEUE: lambda args: enqueue_script()(keys=outbox.entries.script_keys, args=args),
        Op.DROP_REPLY: lambda message: replies().lrem(outbox.inflight_key, 1, message),
        Op.READ_INFLIGHT: lambda: replies().lrange(outbox.inflight_key, 0, -1),
        Op.TRIM_INFLIGHT: lambda count: replies().ltrim(outbox.inflight_key, count, -1),
        Op.ABANDON: lambda args: abandon_script()(keys=outbox.abandon_keys, args=args),
    }


WRITER_UNTIL_SCRIPT = lua_script(__name__, "writer_until.lua")
"""Until when the writer holds the lease (or false), and Redis time (``lua/writer_until.lua``)."""


def _hgets(client: Any, key: str, fields: list[str]) -> Any:
    """``HGET`` of each field, in one round trip (a pipeline, not ``HMGET``: the producer's
    account is allowed ``HGET``); a list, or for an asyncio client an awaitable of one."""
    pipe = client.pipeline(transaction=False)
    for name in fields:
        pipe.hget(key, name)
    return pipe.execute()
