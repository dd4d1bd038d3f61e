"""Which append failures are the data's fault and which are the storage's, and the retries
that follow from it.

A failure caused by the data (Arrow or Lance refusing a value the writer's checks let through)
would fail the same way on every retry: the batch is bisected at once so that only the records
at fault are rejected. Any other failure (I/O, the object store, a commit conflict, a timeout)
may pass: the append is retried.

Lance raises both kinds as ``OSError``; its message says which (Lance's error kinds each print
a fixed prefix): "Invalid user input: The field `a` contained null values …" is the data's
fault, "LanceError(IO): …" is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
from lance.commit import CommitConflictError

from lancequeue.common.errors import WriterReplaced

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DATA_ERROR_TYPES = (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError)
"""Python-side refusals of a value: Arrow's conversions, the writer's own checks."""

_LANCE_DATA_ERRORS = (
    "Invalid user input:",
    "Append with different schema:",
    "LanceError(Schema):",
    "LanceError(Arrow):",
    "Not supported:",
    "Unprocessable:",
)
"""How Lance's refusals of the data begin: bad values, a schema the data does not match, an
Arrow error in encoding (a null in a non-nullable column, a failed cast), a type it cannot store."""

_ARROW_IO_ERRORS = ("Io error", "External error")
"""Arrow errors that are not the data's fault, after the ``LanceError(Arrow): `` prefix."""


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised writing or committing a batch, is a refusal of the data itself
    (bisect the batch; retrying cannot help) rather than a transient failure (retry it)."""
    if isinstance(exc, CommitConflictError):
        return False
    if isinstance(exc, _DATA_ERROR_TYPES):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    message = str(exc).lstrip()
    if not message.startswith(_LANCE_DATA_ERRORS):
        return False
    if message.startswith("LanceError(Arrow):"):
        detail = message.removeprefix("LanceError(Arrow):").lstrip()
        return not detail.startswith(_ARROW_IO_ERRORS)
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """How often a table call that failed for a transient reason is tried again, and the wait
    before the first retry (doubling each time)."""

    retries: int
    backoff_ms: int


async def with_retries(
    policy: RetryPolicy, step: Callable[[], Awaitable[T]], what: str
) -> T | BaseException:
    """Run one step of a commit (``what``, as logged: "append of 128 rows"), retrying transient
    failures; returns its result, or the error that ended it (a data error at once, a transient
    one after the retries). ``WriterReplaced`` is raised."""
    delay_s = policy.backoff_ms / 1000
    for attempt in range(policy.retries + 1):
        try:
            return await step()
        except WriterReplaced:
            raise
        except Exception as exc:
            if is_data_error(exc):  # bisected by the caller: no retry would help
                logger.warning("%s refused: %s", what, exc)
                return exc
            # I/O, object store, conflicts: worth another try
            if attempt == policy.retries:
                logger.error(
                    "%s failed %d times; answering WriteFailed: %s: %s",
                    what,
                    attempt + 1,
                    type(exc).__name__,
                    exc,
                )
                return exc
            logger.warning(
                "%s failed (%s: %s); retry %d/%d in %.2fs",
                what,
                type(exc).__name__,
                exc,
                attempt + 1,
                policy.retries,
                delay_s,
            )
            await asyncio.sleep(delay_s)
            delay_s *= 2
    raise AssertionError("unreachable")
