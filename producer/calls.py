"""What the producer's loops ask their driver for: a :class:`Call` of an :class:`Op`, and how a
driver hands back its result."""

from __future__ import annotations

import enum
from collections.abc import Generator
from typing import Any, NamedTuple

REPLY_BLOCK_S = 1
"""How long the listener's blocking pop waits: how often it checks whether to stop."""


class Op(enum.Enum):
    """What a driver does for a :class:`Call`, and what it sends back."""

    WAIT_BUFFERED = enum.auto()  # (wait_s | None): until records are buffered, or closing
    CONNECT = enum.auto()  # (): have the sending connection connected
    READ_CONFIG = enum.auto()  # (): -> the config fields the producer reads (config_fields)
    READ_EPOCH = enum.auto()  # (): -> the stream's epoch
    READ_WRITER = enum.auto()  # (): -> [writer_until_ms of the config hash, its node's TIME]
    SET_EPOCH = enum.auto()  # (epoch,): SETNX the stream's epoch
    ENQUEUE = enum.auto()  # (args,): -> ids added by the enqueue script
    SUBSCRIBE = enum.auto()  # (): to the table's flush messages
    AWAIT_FLUSH = enum.auto()  # (wait_s,): -> True on the writer's room message, False if none came
    UNSUBSCRIBE = enum.auto()  # ()
    PAUSE = enum.auto()  # (wait_s,): before reconnecting; close() ends it
    NEXT_REPLY = enum.auto()  # (): -> the next reply message moved to the in-flight list
    DROP_REPLY = enum.auto()  # (message,): remove it from the in-flight list
    READ_INFLIGHT = enum.auto()  # (): -> the in-flight list's messages
    TRIM_INFLIGHT = enum.auto()  # (count,): drop its first ``count`` messages
    LISTEN_PAUSE = enum.auto()  # (wait_s,): before trying again; stopping ends it
    WAIT_DUE = enum.auto()  # (wait_s | None,): until then, or a record numbered is due sooner
    ABANDON = enum.auto()  # (args,): -> the abandon script's reply


class Call(NamedTuple):
    """A call a driver performs for a loop; ``timeout_s``, if set, bounds its wait (the
    records' deadline): past it, the driver throws a Redis ``TimeoutError`` in, or
    :class:`NotStarted` if the command never went out."""

    op: Op
    args: tuple[Any, ...] = ()
    timeout_s: float | None = None


Steps = Generator[Call, Any, None]
"""A loop: yields calls, is sent their results."""


def resume(steps: Steps, result: Any, error: BaseException | None) -> Call | None:
    """A loop's next call, once sent the last call's result (or thrown its error); None once the
    loop has ended."""
    try:
        return steps.send(result) if error is None else steps.throw(error)
    except StopIteration:
        return None


class NotStarted(Exception):
    """A call to Redis waited for the one before it past the records' deadline: never sent."""
