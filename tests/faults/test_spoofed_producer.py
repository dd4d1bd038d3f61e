"""A client that may XADD to the stream and knows a producer's id sends entries
in that producer's name. An ok must still mean that *this producer's* record is in the table,
and none of its records may hang or be silently lost: each is written and answered ok, or
answered with an error and absent. The attacker here is a test client with full rights; the
forged rows it gets written are its own business (``strangers``), the honest producer's answers
are what is checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lancequeue.common.codec import encode_record
from lancequeue.common.keys import TableKeys
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


def _forge(rig: FaultRig, reply_key: str, seq: int, record_id: int) -> None:
    """XADD an entry in the name of the producer owning ``reply_key``, with its own content."""
    forged = {
        "id": record_id,
        "text": f"forged {record_id}",
        "vector": np.full(8, -1.0, dtype=np.float32),
    }
    rig.client.xadd(KEYS.stream, stream_entry(reply_key, seq, encode_record(forged)))  # type: ignore[arg-type]


def _enqueued(producer: LoadProcess) -> int:
    return len(ProducerOutcomes.read(producer.outcomes).enqueued)


def _reply_key_in_stream(rig: FaultRig) -> str | None:
    """The reply key named by an entry of the stream (the honest producer's), if any."""
    for fields in queued_entries(rig.client):
        reply = fields.get(b"reply")
        if reply is not None:
            return str(reply.decode())
    return None


def test_an_ok_means_the_producers_own_record_is_in_the_table_when_its_next_seqs_were_forged(
    rig_for: MakeRig,
) -> None:
    rig = rig_for("forged next sequence numbers")
    go = rig.directory / "go"
    # The honest producer sends its first record (seq 1), then waits; no writer runs yet.
    (honest,) = rig.start_load(1, max_records=RECORDS, hold_after=1, go_file=go, close_timeout_s=20)
    reply_key: str = wait_for(lambda: _reply_key_in_stream(rig), 60, "the first honest entry")
    # The attacker reads the producer's id from its reply key and sends seqs 2..11 first.
    first_id = honest.first_id
    for offset in range(1, FORGED + 1):
        _forge(rig, reply_key, seq=offset + 1, record_id=first_id + offset)
    Path(go).touch()
    wait_for(lambda: _enqueued(honest) == RECORDS, 60, "the honest producer to send all")
    writer = rig.start_writer()
    rig.wait_serving(writer)
    rig.rounds = 1
    answered = within(lambda: rig.answered(honest), ANSWER_WAIT_S)
    result = rig.conclude(writer)
    rig.assert_promises(result, strangers_allowed=FORGED)
    assert answered, f"records of the honest producer unanswered: {result.row()}"


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
