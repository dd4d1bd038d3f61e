"""Reply messages, the writer's answers to producers: how the writer encodes them and how a
producer reads them (the format is in ``protocol``'s docstring and PROTOCOL.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lancequeue.common.codec import packb, unpackb
from lancequeue.common.errors import LancequeueError, RecordRejected, WriteFailed, WriteTimeout
from lancequeue.common.protocol import (
    DIGEST_BYTES,
    MAX_PACKED_RECORDS,
    PROTOCOL_VERSION,
    SHA256_VERSIONS,
)


def record_digest(data: bytes, version: bytes = PROTOCOL_VERSION) -> bytes:
    """What the writer answers a written record with: a digest of its encoded bytes, so a
    producer can tell its own record from another client's sent under its id and sequence
    number. The first ``DIGEST_BYTES`` of SHA-256 for entries of ``SHA256_VERSIONS``, BLAKE2b of
    that size for the others."""
    if version in SHA256_VERSIONS:
        return hashlib.sha256(data).digest()[:DIGEST_BYTES]
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class Result:
    """The writer's answer for one record: ``error`` None means written, and ``digest`` is then
    the written record's (``record_digest``)."""

    seq: int
    error: LancequeueError | None
    digest: bytes | None = None


Answer = tuple[int, dict[str, str] | None, bytes | None]
"""A result as the writer sends it: sequence number, error map (None: written), digest."""


def encode_results(results: list[Answer]) -> bytes:
    """One reply message: the results of one producer's records in one flush."""
    return packb(
        [
            [seq, error] if error is not None else [seq, None, digest]
            for seq, error, digest in results
        ]
    )


def encode_ranges(results: list[Answer], version: int | None = None) -> bytes:
    """One reply message in ranges, for a producer whose entries are of ``RANGED_VERSION``:
    ``{"ok": [[first, last, digest], ...], "errors": [[seq, error], ...], "version": v}``, the
    records ``first`` to ``last`` written (each with that digest), only the others one by one,
    and the table version in which the written ones are visible (left out if not given)."""
    written: list[list[Any]] = []
    errors: list[list[Any]] = []
    for seq, error, digest in results:
        if error is not None:
            errors.append([seq, error])
        elif written and written[-1][1] == seq - 1 and written[-1][2] == digest:
            written[-1][1] = seq
        else:
            written.append([seq, seq, digest])
    message: dict[str, Any] = {"ok": written, "errors": errors}
    if version is not None:
        message["version"] = version
    return packb(message)


@dataclass(frozen=True)
class Reply:
    """One reply message: the records written, in ranges, and the others' errors."""

    written: list[tuple[int, int, bytes]]
    """``(first, last, digest)``: records ``first`` to ``last`` are in the table."""
    errors: list[tuple[int, LancequeueError]]
    version: int | None = None
    """The table version in which the records written are visible (None: not said)."""

    @property
    def highest(self) -> int | None:
        """The highest sequence number answered (None if none is)."""
        tops = [last for _, last, _ in self.written] + [seq for seq, _ in self.errors]
        return max(tops, default=None)


def decode_reply(message: bytes | str) -> Reply:
    """Parse one reply message, in either form (``encode_results``, ``encode_ranges``); raises
    ``ValueError`` if it is malformed."""
    try:
        items: Any = unpackb(message.encode() if isinstance(message, str) else message)
    except Exception as exc:  # msgpack and the extension decoders raise several types
        raise ValueError(f"undecodable reply message: {exc}") from exc
    if isinstance(items, dict):
        return _ranges_reply(items)
    if not isinstance(items, list):
        raise ValueError("reply message must be a msgpack array or map")
    reply = Reply([], [])
    for item in items:
        if not (isinstance(item, list) and len(item) in (2, 3) and type(item[0]) is int):
            raise ValueError(f"malformed result {item!r:.200}")
        seq, payload = item[0], item[1]
        if payload is not None:
            reply.errors.append((seq, _to_error(payload)))
        elif len(item) == 3 and isinstance(item[2], bytes):
            reply.written.append((seq, seq, item[2]))
        else:
            raise ValueError(f"result {item!r:.200} says written but carries no digest")
    return reply


def _ranges_reply(items: dict[str, Any]) -> Reply:
    written, errors = items.get("ok", []), items.get("errors", [])
    if not (isinstance(written, list) and isinstance(errors, list)):
        raise ValueError("a reply in ranges holds an 'ok' and an 'errors' array")
    version = items.get("version")
    if version is not None and (type(version) is not int or version < 0):
        raise ValueError(f"malformed table version {version!r:.200}")
    reply = Reply([], [], version)
    for item in written:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and type(item[1]) is int
            and 0 <= item[0] <= item[1]
            and isinstance(item[2], bytes)
        ):
            raise ValueError(f"malformed range {item!r:.200}")
        reply.written.append((item[0], item[1], item[2]))
    for item in errors:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
            raise ValueError(f"malformed result {item!r:.200}")
        reply.errors.append((item[0], _to_error(item[1])))
    return reply


def error_payload(kind: str, message: str, cause: str) -> dict[str, str]:
    """The error map of a result (``kind`` is a key of ``REPLY_ERRORS``)."""
    return {"error": kind, "message": message, "cause": cause}


def decode_results(message: bytes | str) -> list[Result]:
    """Parse one reply message, in either form, into one result per record (in ranges: each
    record of a range); raises ``ValueError`` if it is malformed."""
    reply = decode_reply(message)
    named = sum(last - first + 1 for first, last, _ in reply.written)
    if named > MAX_PACKED_RECORDS:
        raise ValueError(f"reply names {named} records written, more than one flush answers")
    results = [
        Result(seq, None, digest)
        for first, last, digest in reply.written
        for seq in range(first, last + 1)
    ]
    results += [Result(seq, error) for seq, error in reply.errors]
    return sorted(results, key=lambda result: result.seq)


def _to_error(payload: Any) -> LancequeueError:
    if not isinstance(payload, dict):
        return LancequeueError(f"malformed error payload {payload!r}")
    kind = str(payload.get("error", ""))
    message = str(payload.get("message", ""))
    cause = str(payload.get("cause", ""))
    if kind == "WriteFailed":
        return WriteFailed(cause or "Exception", message)
    if kind == "RecordRejected":
        return RecordRejected(message)
    if kind == "WriteTimeout":
        return WriteTimeout(message)
    return LancequeueError(f"{kind}: {message}")
