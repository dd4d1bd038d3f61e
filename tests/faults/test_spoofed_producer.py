"""A client that may XADD to the stream and knows a producer's id sends entries
in that producer's name. An ok must still mean that *this producer's* record is in the table,
and none of its records may hang or be silently lost: each is written and answered ok, or
answered with an error and absent. The attacker here is a test client with full rights; the
forged rows it gets written are its own business (``strangers``), the honest producer's answers
are what is checked."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lancequeue.common.codec import encode_record
from lancequeue.common.entries import entry_fields
from lancequeue.common.keys import TableKeys
from lancequeue.common.protocol import FIELD_NONCE, NONCE_VERSION
from tests.faults.check import ProducerOutcomes
from tests.faults.processes import LoadProcess
from tests.faults.rig import TABLE, FaultRig, MakeRig
from tests.support import queued_entries, stream_entry, wait_for, within

pytestmark = pytest.mark.faults

KEYS = TableKeys(TABLE)
RECORDS = 40
FORGED = 10
ANSWER_WAIT_S = 15.0
"""How long a serving writer may take to answer every record of the honest producer."""


def _forged(record_id: int) -> bytes:
    """The attacker's own record, encoded."""
    return encode_record(
        {
            "id": record_id,
            "text": f"forged {record_id}",
            "vector": np.full(8, -1.0, dtype=np.float32),
        }
    )


def _forge(rig: FaultRig, reply_key: str, seq: int, record_id: int) -> None:
    """XADD an entry in the name of the producer owning ``reply_key``, with its own content."""
    rig.client.xadd(KEYS.stream, stream_entry(reply_key, seq, _forged(record_id)))  # type: ignore[arg-type]


def _forge_with(rig: FaultRig, reply_key: str, seq: int, record_id: int, nonce: bytes) -> None:
    """XADD an entry of version 5 in the name of the producer owning ``reply_key``, with its
    own content and the nonce of another entry (one the attacker read)."""
    fields = entry_fields(reply_key, seq, _forged(record_id), 600_000, NONCE_VERSION)
    fields += [FIELD_NONCE, nonce]
    rig.client.xadd(KEYS.stream, dict(zip(fields[::2], fields[1::2], strict=True)))  # type: ignore[arg-type]


def _enqueued(producer: LoadProcess) -> int:
    return len(ProducerOutcomes.read(producer.outcomes).enqueued)


def _reply_key_in_stream(rig: FaultRig) -> str | None:
    """The reply key named by an entry of the stream (the honest producer's), if any."""
    for fields in queued_entries(rig.client):
        reply = fields.get(b"reply")
        if reply is not None:
            return str(reply.decode())
    return None


def _forge_next_then_serve(
    rig: FaultRig, honest: LoadProcess, go: Path, forge: Callable[[int, int], None]
) -> None:
    """The honest producer sent its first record and holds until ``go``: ``forge`` (seq, row
    id) its next ``FORGED`` sequence numbers, let it send the rest, then a writer serves them
    all; each honest record must be answered, ok only if it is in the table."""
    for offset in range(1, FORGED + 1):
        forge(offset + 1, honest.first_id + offset)
    Path(go).touch()
    wait_for(lambda: _enqueued(honest) == RECORDS, 60, "the honest producer to send all")
    writer = rig.start_writer()
    rig.wait_serving(writer)
    rig.rounds = 1
    answered = within(lambda: rig.answered(honest), ANSWER_WAIT_S)
    result = rig.conclude(writer)
    rig.assert_promises(result, strangers_allowed=FORGED)
    assert answered, f"records of the honest producer unanswered: {result.row()}"


def test_an_ok_means_the_producers_own_record_is_in_the_table_when_its_next_seqs_were_forged(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("forged next sequence numbers")
    go = rig.directory / "go"
    # The honest producer sends its first record (seq 1), then waits; no writer runs yet.
    (honest,) = rig.start_load(1, max_records=RECORDS, hold_after=1, go_file=go, close_timeout_s=20)
    reply_key: str = wait_for(lambda: _reply_key_in_stream(rig), 60, "the first honest entry")
    # The attacker reads the producer's id from its reply key and sends seqs 2..11 first.
    _forge_next_then_serve(rig, honest, go, lambda seq, id_: _forge(rig, reply_key, seq, id_))


def test_a_nonce_read_in_the_inbox_settles_none_of_the_producers_later_records(
    rig_for: MakeRig,
) -> None:
    """The attacker reads the nonce of the producer's first entry (a Redis 6.2 producer account
    may read the inbox) and sends the next sequence numbers with it: the ok answers carrying it
    must not settle records that entry did not carry."""
    rig = rig_for("nonce replayed on the next seqs")
    first_writer = rig.start_writer()
    rig.wait_serving(first_writer)  # it publishes protocol 5: producers send nonces from now on
    first_writer.signal(signal.SIGTERM)
    assert first_writer.wait(60) == 0
    go = rig.directory / "go"
    (honest,) = rig.start_load(1, max_records=RECORDS, hold_after=1, go_file=go, close_timeout_s=20)
    first: dict[bytes, bytes] = wait_for(
        lambda: next(iter(queued_entries(rig.client)), None), 60, "the first honest entry"
    )
    assert first[b"v"] == NONCE_VERSION and len(first[FIELD_NONCE]) == 8, first
    reply_key = first[b"reply"].decode()
    _forge_next_then_serve(
        rig,
        honest,
        go,
        lambda seq, id_: _forge_with(rig, reply_key, seq, id_, first[FIELD_NONCE]),
    )


def test_a_forged_largest_seq_neither_hangs_nor_silently_drops_the_producers_later_records(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("forged largest sequence number")
    writer = rig.start_writer()
    rig.wait_serving(writer)
    go = rig.directory / "go"
    (honest,) = rig.start_load(
        1, max_records=RECORDS, hold_after=FORGED, go_file=go, close_timeout_s=20
    )
    wait_for(lambda: rig.acknowledged() == FORGED, 60, "the honest producer's first records")
    # The attacker finds the producer's id among the writer's keys and sends seq 2**63-1.
    seen_keys = [key.decode() for key in rig.client.scan_iter(match=KEYS.prefix + "seen:*")]
    assert len(seen_keys) == 1, seen_keys
    producer_id = seen_keys[0].rpartition(":")[2]
    _forge(rig, KEYS.reply(producer_id), seq=2**63 - 1, record_id=1)
    wait_for(rig.stream_drained, 30, "the writer to settle the forged entry")
    Path(go).touch()
    wait_for(lambda: _enqueued(honest) == RECORDS, 60, "the honest producer to send all")
    rig.rounds = 1
    answered = within(lambda: rig.answered(honest), ANSWER_WAIT_S)
    result = rig.conclude(writer)
    rig.assert_promises(result, strangers_allowed=1)
    assert answered, (
        f"records of the honest producer still unanswered {ANSWER_WAIT_S}s after it sent them, "
        f"with a writer serving: {result.row()}"
    )
