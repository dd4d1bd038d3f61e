"""How a producer's records become stream entries: single or columnar, by what the writer
publishes in the table's config hash (its ``columnar_batch``, the stream's epoch)."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Sequence
from typing import Protocol

from lancequeue.common.columns import EncodedRecord, encode_columns
from lancequeue.common.entries import columnar_entry_fields, delete_entry_fields, entry_fields
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import (
    CONFIG_COLUMNAR_BATCH,
    CONFIG_PROTOCOL,
    DEFAULT_MAX_QUEUE_SIZE,
    DELETE_VERSION,
    DIGEST_BYTES,
    ENTRY_WIDTH,
    FIELD_NONCE,
    NONCE_VERSION,
    NONCE_WIDTH,
    PACKED_ENTRY_WIDTH,
    PROTOCOL_VERSION,
    RANGED_VERSION,
    SHA256_VERSION,
)
from lancequeue.common.replies import record_digest

_EPOCH = re.compile(r"[0-9a-fA-F]{32}")
CONFIG_REFRESH_S = 5.0
"""How often a producer re-reads the config hash: the writer's ``columnar_batch`` (the most
records it packs into one entry; a new writer may have another) and the stream's epoch."""


class Numbered(Protocol):
    """A record on its way, numbered (``outbox.Outgoing``)."""

    seq: int
    record: EncodedRecord
    deadline: float
    digests: tuple[bytes, ...]
    delete: bool


def _ttl_ms(deadline: float, now: float) -> int:
    """Milliseconds from ``now`` to ``deadline``, at least 1 (the caller sends only records
    whose deadline has not passed)."""
    return max(1, int((deadline - now) * 1000))


def _positive(raw: bytes | str | None) -> int | None:
    """A config field holding a positive decimal integer, else None."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return int(text) if text is not None and text.isdigit() and int(text) > 0 else None


def _accept(item: Numbered, sent: tuple[bytes]) -> None:
    """Let an ok answer carrying the digest in ``sent`` (the record's form as sent now, one
    tuple shared by the records of an entry) settle ``item``, as well as those of its earlier
    sends: a copy sent before may be the one written."""
    digests = item.digests
    if not digests:
        item.digests = sent
    elif sent[0] not in digests:
        item.digests = (*digests, sent[0])


class EntryMaker:
    """Splits numbered records into stream entries and writes the enqueue script's ARGV."""

    def __init__(self, keys: TableKeys, reply_key: str, pack_records: int) -> None:
        self._keys = keys
        self._channel = keys.pushed_channel
        self._reply_key = reply_key
        self._pack_records = pack_records
        self._pack_limit = pack_records
        self._learned_at: float | None = None
        self._version = PROTOCOL_VERSION
        """The version entries are sent as: ``RANGED_VERSION`` (answers in ranges) once a writer
        published ``columnar_batch``, which says it reads them; ``SHA256_VERSION`` once it also
        published ``protocol`` 3, ``NONCE_VERSION`` once 5."""
        self._lock = threading.Lock()
        self.epoch = ""
        """The stream's epoch as last read ('' until read): records sent now are sent under it."""

    def pack(self, chunk: Sequence[Numbered]) -> list[int]:
        """How ``chunk`` (numbered) is split into stream entries: the number of records of each,
        in order. An entry takes up to ``pack_records`` records (and no more than the writer's
        ``max_batch``: a packed entry is never split across batches) with consecutive sequence
        numbers; with ``pack_records`` 1, every record is an entry of its own. A delete is
        always an entry of its own."""
        sizes: list[int] = []
        previous = -1
        alone = False  # the previous item was a delete
        for item in chunk:
            joins = not (alone or item.delete) and item.seq == previous + 1
            if sizes and joins and sizes[-1] < self._pack_limit:
                sizes[-1] += 1
            else:
                sizes.append(1)
            previous, alone = item.seq, item.delete
        return sizes

    def script_args(
        self, chunk: Sequence[Numbered], sizes: list[int], now: float
    ) -> list[bytes | str | int]:
        """ARGV of the enqueue script for ``chunk`` (numbered) split into entries of ``sizes``
        records (see ``pack``), each entry with the time its records have left (``now`` on
        ``time.monotonic()``): until the earliest deadline among them. Adds to each record's
        ``digests`` the one the writer's ok answer carries for it as sent now: its entry's
        nonce (version 5; one of its own for each entry, so that a nonce is public only once
        its own entry is in the inbox, never while its records may still be sent again), else
        the record's own digest in a single-record entry, the ``cols`` value's in a columnar
        one."""
        version = self._version  # one for the whole call: the digests must match the entries
        nonced = version == NONCE_VERSION
        randomness = os.urandom(DIGEST_BYTES * len(sizes)) if nonced else b""  # one call a send
        width = NONCE_WIDTH if nonced else 0
        deletes_as = version if nonced else DELETE_VERSION
        single = max(sizes, default=1) == 1  # single-record entries, which every writer reads
        args: list[bytes | str | int] = [
            DEFAULT_MAX_QUEUE_SIZE,
            (ENTRY_WIDTH if single else PACKED_ENTRY_WIDTH) + width,
            self._channel,
        ]
        start = 0
        for number, size in enumerate(sizes):
            items = chunk[start : start + size]
            start += size
            item = items[0]
            deadline = item.deadline if size == 1 else min(item.deadline for item in items)
            ttl_ms = _ttl_ms(deadline, now)
            if item.delete:  # an entry of its own (``pack``)
                data = item.record.encoded()
                args.extend(
                    delete_entry_fields(
                        self._reply_key, item.seq, data, ttl_ms, not single, deletes_as
                    )
                )
            elif single:
                data = item.record.encoded()
                args.extend(entry_fields(self._reply_key, item.seq, data, ttl_ms, version))
            else:
                data = encode_columns([item.record for item in items])
                args.extend(
                    columnar_entry_fields(self._reply_key, item.seq, size, data, ttl_ms, version)
                )
            if nonced:
                nonce = randomness[number * DIGEST_BYTES : (number + 1) * DIGEST_BYTES]
                args += [FIELD_NONCE, nonce]
                sent = (nonce,)
            else:
                sent = (record_digest(data, deletes_as if item.delete else version),)
            for item in items:
                _accept(item, sent)
        return args

    @property
    def script_keys(self) -> list[str]:
        """KEYS of the enqueue script."""
        keys = self._keys
        return [keys.inbox, keys.config, keys.queued, keys.inboxed]

    def config_stale(self, now: float) -> bool:
        """Whether to (re)read the config hash before sending: never read yet, or last read
        ``CONFIG_REFRESH_S`` ago."""
        learned_at = self._learned_at
        return learned_at is None or now - learned_at >= CONFIG_REFRESH_S

    @property
    def config_fields(self) -> list[str]:
        """The config hash fields ``learn_config`` takes first (the epoch, its own key, last)."""
        return [CONFIG_COLUMNAR_BATCH, CONFIG_PROTOCOL]

    def learn_config(self, values: list[bytes | str | None], now: float) -> bool:
        """What the config hash's ``config_fields`` and the ``epoch`` key hold. Pack no more
        records per entry than the writer's ``columnar_batch`` (its ``max_batch``); until a
        writer has published one, do not pack: it also says the writer reads columnar entries
        and answers in ranges (version 2). A ``protocol`` of 3 or more says it reads version 3
        (SHA-256 digests), of 5 or more version 5 (nonces, no digests). The epoch goes with
        the records sent from now on.
        Returns True if the stream has no epoch yet: name one (``SETNX``, ``new_epoch``) and
        read the config again, so every record is sent under one."""
        raw, protocol, epoch = values
        limit = _positive(raw)
        published = limit is not None
        name = epoch.decode(errors="replace") if isinstance(epoch, bytes) else (epoch or "")
        spoken = _positive(protocol) or 0
        if not published:
            version = PROTOCOL_VERSION
        elif spoken >= int(NONCE_VERSION):
            version = NONCE_VERSION
        elif spoken >= int(SHA256_VERSION):
            version = SHA256_VERSION
        else:
            version = RANGED_VERSION
        with self._lock:
            self._pack_limit = min(self._pack_records, limit or 1)
            self._version = version
            # Anything but an epoch of ours (32 hex digits) is unknown: records are sent under
            # none, and a writer replaces it.
            self.epoch = name if _EPOCH.fullmatch(name) else ""
            self._learned_at = now
            return not epoch

    @staticmethod
    def new_epoch() -> str:
        """A name for a stream that has none (Redis never had one, or lost it)."""
        return uuid.uuid4().hex
