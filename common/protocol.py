"""The wire format between producers and the writer (PROTOCOL.md is the prose version).

Producers push entries onto the table's inbox list (``ENQUEUE_SCRIPT``); the writer moves them
into the stream it reads with its consumer group. A stream entry carries one record::

    v      "1"                       protocol version ("2": its producer reads answers in ranges)
    reply  lancequeue:{T}:reply:ID   the producer's reply list
    seq    "17"                      the producer's sequence number for this record
    ttl    "59980"                   ms the record may wait, counted from ``at``
    rec    <msgpack map>             the record (common/codec.py)
    at     "1764871234567"           Redis time of the push, added by the writer's move

or several (a packed entry), in place of ``rec``::

    n      "3"                       how many records
    recs   <msgpack array of bin>    each one an encoded record; record i has sequence seq + i

or several column by column (a columnar entry, ``common/columns.py``), in place of ``rec``::

    n      "3"                       how many records
    cols   <msgpack map>             column name -> one value per record, or one array of them

or, in an entry of version 4 or 5, a delete by key in place of ``rec`` (``n`` "1" may precede
it)::

    del    <msgpack map>             the key: each key column of the table and its value

and, in an entry of version 5, last::

    nonce  <8 bytes>                 drawn at random by the producer for this entry

A record's deadline is ``at`` (or the entry id's time, if earlier) plus ``ttl``, both Redis
server time, so producer and writer clocks never need to agree and no client moves it. A writer
never writes a record whose deadline passed before its batch was built: it answers
``WriteTimeout`` instead. Whether a record the writer has not answered by its deadline is
written is decided in Redis: the writer claims a batch's records before writing them, a
producer abandons a record at its deadline plus its grace (``ABANDON_SCRIPT``), and exactly one
of the two wins.

After each flush the writer pushes, to every reply list with records in the batch, one
message: for entries of version 1 a msgpack array of results, ``[seq, nil, digest]`` when the
record is in the table (``record_digest`` of what was written: the record's ``rec``, or for a
columnar entry its ``cols``; for an entry of version 5, its ``nonce``), else ``[seq, error]``,
``error`` a map ``{"error": "RecordRejected" | "WriteFailed" | "WriteTimeout", "message": str,
"cause": str}``; for a producer that sent entries of version 2 or more, ``{"ok": [[first, last,
digest], ...], "errors": [[seq, error], ...]}`` (``encode_ranges``).
"""

from __future__ import annotations

from lancequeue.common.lua_scripts import lua_script

PROTOCOL_VERSION = b"1"
RANGED_VERSION = b"2"
"""Entries of version 2 are those of version 1 from a producer that reads its answers in ranges
(``encode_ranges``). The Python producer sends them to writers that publish ``columnar_batch``."""
SHA256_VERSION = b"3"
"""Entries of version 3 are those of version 2 whose ok answers carry SHA-256 digests, not
BLAKE2b (``record_digest``): the cheaper of the two wherever the CPU hashes SHA-256 in hardware,
as most x86 and ARM server CPUs do. The Python producer sends them to writers that publish
``protocol`` 3 or more."""
DELETE_VERSION = b"4"
"""Entries of version 4 are those of version 3 that may carry a delete (``del``) in place of a
record: a writer that did not know deletes refuses the version rather than write the key as a
row. The Python producer sends its deletes in them, its records as version 3, to writers that
publish ``protocol`` 4."""
NONCE_VERSION = b"5"
"""Entries of version 5 are those of version 4 ending with a ``nonce`` field: ``DIGEST_BYTES``
bytes the producer drew at random for that entry as it sent it. An ok answer carries the
nonce where earlier versions carry a hash of what was written, so neither side hashes the
records (a columnar entry's ``cols`` runs to hundreds of kilobytes); another client's entry
under the producer's id still cannot carry it. The Python producer sends its records and deletes
in them to writers that publish ``protocol`` 5 or more."""
VERSIONS = (PROTOCOL_VERSION, RANGED_VERSION, SHA256_VERSION, DELETE_VERSION, NONCE_VERSION)
HIGHEST_VERSION = NONCE_VERSION
RANGED_VERSIONS = (RANGED_VERSION, SHA256_VERSION, DELETE_VERSION, NONCE_VERSION)
"""The versions whose producers read their answers in ranges."""
SHA256_VERSIONS = (SHA256_VERSION, DELETE_VERSION)
"""The versions whose ok answers carry SHA-256 digests."""
DELETE_VERSIONS = (DELETE_VERSION, NONCE_VERSION)
"""The versions whose entries may carry a delete (``del``)."""
FIELD_VERSION = b"v"
FIELD_REPLY = b"reply"
FIELD_SEQ = b"seq"
FIELD_TTL = b"ttl"
FIELD_RECORD = b"rec"
FIELD_COUNT = b"n"
FIELD_RECORDS = b"recs"
FIELD_COLUMNS = b"cols"
FIELD_DELETE = b"del"
"""In place of ``rec`` (entries of version 4 or 5): delete the rows of this key."""
FIELD_NONCE = b"nonce"
"""The last field of an entry of version 5: what an ok answer carries as each record's digest."""
FIELD_AT = b"at"
"""Added by the writer as it moves an entry from the inbox: the Redis time (ms) it was pushed,
set by the enqueue script. A record's deadline is counted from it (or from the entry id, if
earlier or missing), so no entry id a client might choose moves it."""
FIELD_REASON = b"reason"
"""Added to a dead letter, as are the three below: why the writer set the entry aside."""
FIELD_DELIVERIES = b"deliveries"
FIELD_ORIGINAL_ID = b"original_id"
FIELD_DEAD_AT_MS = b"dead_at_ms"
MAX_PACKED_RECORDS = 65536
"""Most records one packed entry may carry."""
MAX_SEQ = 2**53 - 1
"""Largest sequence number: Redis scripts compare them as Lua numbers (doubles)."""
SEQ_JUMP_LIMIT = 2**32
"""A producer's sequence number more than this above the highest the writer settled or claimed
for it is refused (acked, never written or answered): it can only be another client's doing
(an honest producer's numbers skip only records that never reached the stream), and would make
the producer's later records look like copies."""
ABANDONED_TTL_MS = 86_400_000
"""Expiry of a producer's set of abandoned sequence numbers, set by the writer at each claim of
that producer's records; the writer removes the members it has settled."""
DIGEST_BYTES = 8

DEFAULT_MAX_QUEUE_SIZE = 4096
"""Records the stream may hold before producers wait, until a writer publishes its own value."""
CONFIG_MAX_QUEUE_SIZE = "max_queue_size"
CONFIG_MAX_BATCH = "max_batch"
"""Config hash field: the writer's ``max_batch``; producers pack no more records per entry (the
enqueue script also bounds its count of the inbox's records by it)."""
CONFIG_COLUMNAR_BATCH = "columnar_batch"
"""Config hash field of a writer that reads columnar entries: its ``max_batch`` again. The
Python producer sends columnar entries of up to this many records, and none without it."""
CONFIG_COLUMNS = "columns"
"""Config hash field: JSON of each column's kind (``COLUMN_KINDS``), once the table exists."""
COLUMN_KINDS = ("string", "integer", "number", "boolean", "list", "other")
CONFIG_UPSERT_KEY = "upsert_key"
"""Config hash field: the writer's ``--upsert-key`` columns, comma-separated ('' when its records
are appended); ``lancequeue produce --upsert-key`` checks it before sending."""
CONFIG_WRITER_UNTIL = "writer_until_ms"
"""Config hash field: until when (Redis time, ms) the lease holder renewed it; gone at stop."""
CONFIG_PROTOCOL = "protocol"
"""Config hash field: the highest entry version the writer reads (``HIGHEST_VERSION``). The
Python producer sends entries of version 3 once it is 3 or more, of version 5 once it is 5 or
more."""

ENTRY_WIDTH = 10
"""Arguments one single-record entry takes in the enqueue script: five field/value pairs."""
PACKED_ENTRY_WIDTH = 12
"""Arguments one packed or columnar entry takes in the enqueue script: six field/value pairs."""
NONCE_WIDTH = 2
"""Arguments the ``nonce`` of an entry of version 5 adds to either width."""

ENQUEUE_SCRIPT = lua_script(
    __name__,
    "enqueue.lua",
    ENTRY_WIDTH=ENTRY_WIDTH,
    PACKED_ENTRY_WIDTH=PACKED_ENTRY_WIDTH,
    NONCED_PACKED_WIDTH=PACKED_ENTRY_WIDTH + NONCE_WIDTH,
    MAX_PACKED_RECORDS=MAX_PACKED_RECORDS,
    CONFIG_MAX_QUEUE_SIZE=CONFIG_MAX_QUEUE_SIZE,
    CONFIG_MAX_BATCH=CONFIG_MAX_BATCH,
)
"""Push entries onto the inbox while the queue has room (``lua/enqueue.lua`` says how)."""
ABANDON_SCRIPT = lua_script(__name__, "abandon.lua")
"""Abandon records the writer has not answered by their deadline (``lua/abandon.lua``)."""
