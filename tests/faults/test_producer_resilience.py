"""Producers through Redis restarts and lost connections, and their records' deadlines.

Real faults only: a redis-server of the test's own (AOF on) stopped with SIGTERM and started
again on the same port and directory, and a TCP proxy that loses Redis's reply to an EVALSHA
(the enqueue script) or to a BLMOVE (the reply listener's pop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import selectors
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgpack
import pytest
import redis

from lancequeue.common.codec import decode_record
from lancequeue.common.errors import OutcomeUnknown, ProducerClosed, WriteTimeout
from lancequeue.common.protocol import ENQUEUE_SCRIPT
from lancequeue.producer import AsyncProducer, Producer
from tests.redis_server import RestartableRedis
from tests.support import (
    KEYS,
    StartWriter,
    gather,
    queued_entries,
    queued_records,
    record,
    resolve,
    table_ids,
    wait_for,
)

# -- a redis-server that can be restarted ---------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- a proxy that loses replies ---------------------------------------------------------------


_WATCHED = (b"EVALSHA", b"BLMOVE")
"""Commands whose replies the proxy can lose."""
_NIL_REPLIES = (b"*-1", b"$-1", b"_")
"""How a reply starts when a blocking pop timed out (RESP2 and RESP3): never lost."""


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.awaiting: bytes | None = None  # the watched command whose reply comes next
        self.silent = False  # a reply was swallowed: forward nothing more from Redis
        self.tail = b""  # the last bytes sent upstream, to find a command split across reads


class LossyProxy:
    """A TCP proxy in front of Redis that can lose the reply to the next EVALSHA or to the
    next BLMOVE that returns a message: it forwards the command, then, when Redis's reply
    comes, either closes the client's connection or swallows the reply and leaves the
    connection open. It can also refuse clients."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._lock = threading.Lock()
        self._lose: tuple[bytes, str] | None = None  # (command, "close" or "swallow"), armed
        self._refuse_after_loss = False
        self._refusing = False
        self.lost_replies = 0
        self._links: list[_Link] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lossy-proxy", daemon=True)
        self._thread.start()

    def lose_next_reply(
        self, command: bytes, how: str = "close", then_refuse: bool = False
    ) -> None:
        """Lose Redis's next reply to ``command`` (one of ``_WATCHED``) that is not a nil."""
        assert command in _WATCHED
        with self._lock:
            self._lose = (command, how)
            self._refuse_after_loss = then_refuse

    def lose_next_evalsha_reply(self, how: str = "close", then_refuse: bool = False) -> None:
        self.lose_next_reply(b"EVALSHA", how, then_refuse)

    def refuse(self, refusing: bool) -> None:
        """Close every connection and refuse new ones (or accept them again)."""
        with self._lock:
            self._refusing = refusing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                with self._lock:
                    refusing = self._refusing
                if refusing:
                    for link in list(self._links):
                        self._drop(selector, link)
                for key, _ in selector.select(timeout=0.02):
                    if key.fileobj is self._listener:
                        self._accept(selector, refusing)
                    else:
                        self._pump(selector, key.data, key.fileobj is key.data.client)
        finally:
            for link in list(self._links):
                self._drop(selector, link)
            selector.close()
            self._listener.close()

    def _accept(self, selector: selectors.BaseSelector, refusing: bool) -> None:
        client, _ = self._listener.accept()
        if refusing:
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
        link = _Link(client, upstream)
        self._links.append(link)
        selector.register(client, selectors.EVENT_READ, link)
        selector.register(upstream, selectors.EVENT_READ, link)

    def _pump(self, selector: selectors.BaseSelector, link: _Link, from_client: bool) -> None:
        source = link.client if from_client else link.upstream
        try:
            data = source.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._drop(selector, link)
            return
        if from_client:
            for command in _WATCHED:
                if command in link.tail + data:
                    link.awaiting = command
            link.tail = data[-16:]
            link.upstream.sendall(data)
            return
        if link.silent:
            return
        command, link.awaiting = link.awaiting, None
        with self._lock:
            how = None
            armed = self._lose is not None and self._lose[0] == command
            if self._lose is not None and armed and not data.startswith(_NIL_REPLIES):
                how, self._lose = self._lose[1], None
                self.lost_replies += 1
                self._refusing = self._refusing or self._refuse_after_loss
        if how is None:
            link.client.sendall(data)
        elif how == "close":
            self._drop(selector, link)
        else:  # "swallow": keep the connection open, forward nothing more on it
            link.silent = True

    def _drop(self, selector: selectors.BaseSelector, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)
        for sock in (link.client, link.upstream):
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(sock)
            sock.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[LossyProxy]:
    made = LossyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        yield made
    finally:
        made.close()


def _stream(client: redis.Redis) -> list[tuple[int, int, bytes]]:
    """(seq, ttl, record bytes) of each record in the stream (packed or not), in stream order."""
    found: list[tuple[int, int, bytes]] = []
    for fields in queued_entries(client):
        seq, ttl = int(fields[b"seq"]), int(fields[b"ttl"])
        records = msgpack.unpackb(fields[b"recs"]) if b"recs" in fields else [fields[b"rec"]]
        found.extend((seq + i, ttl, data) for i, data in enumerate(records))
    return found


async def _stream_holds(client: redis.Redis, count: int, what: str) -> list[tuple[int, int, bytes]]:
    """Wait until at least ``count`` records are in the stream (the producer's sender puts them
    there after ``enqueue`` returned); returns them all."""
    found: list[tuple[int, int, bytes]] = await asyncio.to_thread(
        wait_for, lambda: (held := _stream(client)) and len(held) >= count and held, 30, what
    )
    return found


# -- deadlines ------------------------------------------------------------------------------


async def test_a_record_the_writer_does_not_answer_by_its_deadline_plus_the_grace_fails(
    redis_url: str, client: redis.Redis
) -> None:
    made = Producer("docs", redis_url=redis_url, timeout_ms=300, answer_grace_ms=200)
    try:
        future = made.enqueue(record(1))
        (seq, ttl, _), *more = await _stream_holds(client, 1, "the record in the stream")
        assert not more
        assert seq == 1 and 0 < ttl <= 300  # the entry carries the time left to its deadline
        with pytest.raises(WriteTimeout) as caught:
            await resolve(future, 30)
        message = str(caught.value)
        assert "did not answer" in message and "will not write" in message
        assert made.outstanding == 0
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_an_async_record_the_writer_does_not_answer_in_time_fails(redis_url: str) -> None:
    async with AsyncProducer(
        "docs", redis_url=redis_url, timeout_ms=300, answer_grace_ms=200
    ) as made:
        future = await made.enqueue(record(1))
        with pytest.raises(WriteTimeout, match="did not answer"):
            await asyncio.wait_for(future, 30)
        assert made.outstanding == 0


async def test_a_record_whose_deadline_passed_while_redis_was_down_fails_and_is_never_written(
    own_redis: RestartableRedis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=own_redis.url, max_buffered_records=1)
    try:
        await asyncio.to_thread(own_redis.stop)
        # enqueue returns at once; the sender keeps trying until the record's deadline, then
        # fails its future, at that deadline.
        started = time.monotonic()
        unsent = made.enqueue(record(1), 2.0)
        queued = made.enqueue(record(2), 3.0)  # waits in the buffer (one record) behind it
        # The buffer is full: an enqueue waits for room until its own deadline, and raises.
        with pytest.raises(WriteTimeout) as caught:
            await asyncio.to_thread(made.enqueue, record(3), 0.5)
        waited_s = time.monotonic() - started
        assert 0.5 <= waited_s < 1.5, waited_s
        assert "not sent" in str(caught.value) and "will not be" in str(caught.value)
        assert "Redis unreachable" in str(caught.value)
        for future, deadline_s in ((unsent, 2.0), (queued, 3.0)):
            with pytest.raises(WriteTimeout) as caught:
                await resolve(future, 30)
            failed_s = time.monotonic() - started
            assert deadline_s <= failed_s < deadline_s + 1.0, failed_s  # at its deadline
            message = str(caught.value)
            assert "not sent" in message and "will not be" in message, message
            assert "Redis unreachable" in message, message
        # (the sender counts a record out just after failing its future)
        await asyncio.to_thread(wait_for, lambda: made.outstanding == 0, 5, "nothing outstanding")
        await asyncio.to_thread(own_redis.start)
        start_writer(redis_url=own_redis.url, coalesce_ms=20)
        # The same producer reconnects; once its next record is answered, the writer has
        # been through everything sent before it.
        await asyncio.to_thread(made.write, record(4), 30)
        assert table_ids(db_uri) == [4]
    finally:
        await asyncio.to_thread(made.close)


async def test_a_record_sent_unconfirmed_then_cut_off_past_its_deadline_is_never_written(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, answer_grace_ms=300)
    try:
        first = made.enqueue(record(0), timeout=60)  # loads the script; written later
        await _stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close", then_refuse=True)
        # Redis added it, but the producer cannot know: it retries until the deadline, then
        # leaves the record to the writer's answer, which cannot come either.
        lost = made.enqueue(record(1), 0.5)
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        assert [seq for seq, _, _ in _stream(client)] == [1, 2]
        # Nor can it abandon the record in Redis: it cannot know whether a writer claimed it.
        with pytest.raises(OutcomeUnknown, match="may or may not be in the table"):
            await resolve(lost, 30)
        start_writer(coalesce_ms=20)  # after record 1's deadline: it drops it
        proxy.refuse(False)
        await resolve(first, 30)
        assert table_ids(db_uri) == [0]
    finally:
        await asyncio.to_thread(made.close, 0)


async def test_close_ends_an_enqueue_waiting_for_redis_with_producer_closed(
    own_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    made = Producer("docs", redis_url=own_redis.url, max_buffered_records=2)
    await asyncio.to_thread(own_redis.stop)
    sending = made.enqueue(record(1), 600)
    await asyncio.to_thread(
        wait_for, lambda: "reconnecting" in caplog.text, 30, "the sender to wait for Redis"
    )
    # Two more records fill the buffer behind the stuck send; the third waits for room.
    waiting = asyncio.ensure_future(
        asyncio.to_thread(made.enqueue_many, [record(2), record(3), record(4)], 600)
    )
    await asyncio.to_thread(
        wait_for, lambda: made.outstanding == 3, 30, "the enqueue to wait for room"
    )
    assert not waiting.done()
    started = time.monotonic()
    await asyncio.to_thread(made.close, 0)
    futures = await asyncio.wait_for(waiting, 30)
    assert time.monotonic() - started < 5, "close() waited for Redis"
    for future in [sending, *futures]:
        assert future.done()
        with pytest.raises(ProducerClosed, match="not written"):
            await resolve(future, 5)
    assert made.outstanding == 0


# -- sequence numbers and sending again -----------------------------------------------------


async def test_concurrent_senders_add_entries_in_sequence_order(
    producer: Producer, client: redis.Redis
) -> None:
    def send(k: int) -> None:
        for n in range(5):
            producer.enqueue_many([record(k * 100 + n * 10 + i) for i in range(10)])

    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        await asyncio.gather(*(asyncio.wrap_future(threads.submit(send, k)) for k in range(8)))
    entries = await _stream_holds(client, 400, "all 400 records in the stream")
    assert [seq for seq, _, _ in entries] == list(range(1, 401))
    # Each thread's records are in the stream in the order it enqueued them.
    ids = [decode_record(data)["id"] for _, _, data in entries]
    for k in range(8):
        mine = [i for i in ids if i // 100 == k]
        assert mine == sorted(mine) and len(mine) == 50, (k, mine)
    producer.close(timeout=0)


async def test_a_chunk_whose_confirmation_was_lost_is_sent_again_with_the_same_seqs(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, timeout_ms=30_000)
    try:
        first = made.enqueue(record(1))  # loads the script: the lost reply is not a NOSCRIPT
        await _stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close")
        second = made.enqueue_many([record(2), record(3)])
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await _stream_holds(client, 5, "the chunk sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 3, 2, 3]
        assert entries[1][2] == entries[3][2] and entries[2][2] == entries[4][2]
        assert 0 < entries[3][1] <= entries[1][1] <= 30_000  # ttl recomputed for the resend
        start_writer(coalesce_ms=20)
        assert await gather([first, *second]) == [None, None, None]
        assert table_ids(db_uri) == [1, 2, 3]  # the writer dropped the copies
    finally:
        await asyncio.to_thread(made.close)


async def test_an_async_chunk_whose_confirmation_was_lost_is_sent_again_with_the_same_seqs(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    async with AsyncProducer("docs", redis_url=proxy.url) as made:
        first = await made.enqueue(record(1))
        await _stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("close")
        second = await made.enqueue(record(2))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await _stream_holds(client, 3, "the record sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 2]
        start_writer(coalesce_ms=20)
        await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert table_ids(db_uri) == [1, 2]


async def test_a_send_whose_reply_never_comes_is_sent_again_after_the_redis_timeout(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    made = Producer("docs", redis_url=proxy.url, redis_timeout_ms=300)
    try:
        first = made.enqueue(record(1))
        await _stream_holds(client, 1, "the first record in the stream")
        proxy.lose_next_evalsha_reply("swallow")  # the connection stays open, silent
        second = made.enqueue(record(2))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        entries = await _stream_holds(client, 3, "the record sent again")
        assert [seq for seq, _, _ in entries] == [1, 2, 2]
        start_writer(coalesce_ms=20)
        assert await gather([first, second]) == [None, None]
        assert table_ids(db_uri) == [1, 2]
    finally:
        await asyncio.to_thread(made.close)


async def test_a_redis_that_forgot_the_enqueue_script_is_given_it_again(
    producer: Producer, client: redis.Redis
) -> None:
    producer.enqueue(record(1))
    await _stream_holds(client, 1, "the first record in the stream")  # the script is loaded
    client.script_flush()
    assert client.script_exists(hashlib.sha1(ENQUEUE_SCRIPT.encode()).hexdigest()) == [False]
    second = producer.enqueue(record(2))
    entries = await _stream_holds(client, 2, "the second record in the stream")
    assert [seq for seq, _, _ in entries] == [1, 2]
    assert not second.done()  # sent, not failed (no writer runs: no answer yet)
    producer.close(timeout=0)


# -- replies lost on the way ----------------------------------------------------------------


async def test_a_reply_redis_moved_but_a_lost_connection_never_delivered_still_resolves_the_record(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)  # straight to Redis: only the producer's replies are lost
    made = Producer("docs", redis_url=proxy.url, timeout_ms=10_000)
    inflight = KEYS.reply_inflight(made.producer_id)
    assert not KEYS.is_reply_key(inflight)  # a stream entry cannot make the writer push there
    try:
        proxy.lose_next_reply(b"BLMOVE", "close", then_refuse=True)
        future = made.enqueue(record(1))
        await asyncio.to_thread(wait_for, lambda: proxy.lost_replies == 1, 30, "a lost reply")
        # Redis popped the reply and the producer never got it; it waits in the in-flight
        # list, with an expiry in case the producer never comes back for it.
        assert client.llen(KEYS.reply(made.producer_id)) == 0
        assert client.llen(inflight) == 1
        assert 0 < client.pttl(inflight) <= 600_000
        assert not future.done()
        proxy.refuse(False)
        await resolve(future, 30)  # the answer, not WriteTimeout
        assert table_ids(db_uri) == [1]
        await asyncio.to_thread(wait_for, lambda: client.exists(inflight) == 0, 30, "no leftovers")
    finally:
        await asyncio.to_thread(made.close)


async def test_an_async_producer_settles_a_reply_a_lost_connection_never_delivered(
    proxy: LossyProxy, client: redis.Redis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(coalesce_ms=20)
    async with AsyncProducer("docs", redis_url=proxy.url, timeout_ms=10_000) as made:
        proxy.lose_next_reply(b"BLMOVE", "close")
        futures = await made.enqueue_many([record(1), record(2)])
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert proxy.lost_replies == 1
        assert table_ids(db_uri) == [1, 2]
        inflight = KEYS.reply_inflight(made.producer_id)
    assert client.exists(inflight) == 0


# -- Redis restarts -------------------------------------------------------------------------


async def test_a_producer_keeps_writing_through_a_redis_restart_and_every_record_is_answered(
    own_redis: RestartableRedis, start_writer: StartWriter, db_uri: str
) -> None:
    start_writer(redis_url=own_redis.url, coalesce_ms=20)
    made = Producer("docs", redis_url=own_redis.url, timeout_ms=30_000)
    answered: list[int] = []

    def produce() -> None:
        for start in range(0, 120, 4):
            made.write_many([record(i) for i in range(start, start + 4)])
            answered.extend(range(start, start + 4))

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        producing = asyncio.wrap_future(thread.submit(produce))
        await asyncio.to_thread(wait_for, lambda: len(answered) >= 20, 30, "20 records")
        await asyncio.to_thread(own_redis.restart)
        await asyncio.wait_for(producing, 60)  # raises the first record's error, if any
    await asyncio.to_thread(made.close)
    assert answered == list(range(120))
    assert table_ids(db_uri) == list(range(120))


@pytest.fixture
async def own_async_producer(own_redis: RestartableRedis) -> AsyncIterator[AsyncProducer]:
    async with AsyncProducer("docs", redis_url=own_redis.url, timeout_ms=30_000) as made:
        yield made


async def test_an_async_producer_keeps_writing_through_a_redis_restart(
    own_redis: RestartableRedis,
    start_writer: StartWriter,
    own_async_producer: AsyncProducer,
    db_uri: str,
) -> None:
    start_writer(redis_url=own_redis.url, coalesce_ms=20)
    answered: list[int] = []

    async def produce(lane: int) -> None:
        for i in range(lane, 120, 4):
            await own_async_producer.write(record(i))
            answered.append(i)

    producing = asyncio.gather(*(produce(lane) for lane in range(4)))
    try:
        await asyncio.to_thread(wait_for, lambda: len(answered) >= 20, 30, "20 records")
        await asyncio.to_thread(own_redis.restart)
        await asyncio.wait_for(producing, 60)
    finally:
        producing.cancel()
    assert sorted(answered) == list(range(120))
    assert table_ids(db_uri) == list(range(120))


def test_a_done_callback_raising_system_exit_leaves_no_record_of_its_batch_unsettled() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    made = Producer("docs", redis_url=f"redis://127.0.0.1:{dead_port}", close_timeout_ms=100)
    futures = made.enqueue_many([record(i) for i in range(5)], timeout=0.3)

    def exit_now(_: object) -> None:
        raise SystemExit("a callback that exits")

    futures[0].add_done_callback(exit_now)
    done, _ = concurrent.futures.wait(futures, 10)
    assert len(done) == 5  # the others of its batch were failed all the same
    assert all(isinstance(future.exception(), WriteTimeout) for future in futures)
    made.close()


def test_nothing_is_sent_after_a_close_from_a_done_callback_even_if_redis_comes_back(
    tmp_path: Path,
) -> None:
    server = RestartableRedis(tmp_path / "redis")  # not started yet: Redis is down
    made = Producer("docs", redis_url=server.url, linger_ms=1_000)
    closed = threading.Event()

    def close_then_start_redis(_: object) -> None:
        made.close()  # on the sender thread, while it holds the chunk of both records
        server.start()
        closed.set()

    first = made.enqueue(record(1), timeout=2)
    first.add_done_callback(close_then_start_redis)
    second = made.enqueue(record(2), timeout=4)  # the same chunk (the linger), a later deadline
    try:
        assert isinstance(second.exception(timeout=30), ProducerClosed)
        assert closed.wait(30)
        with redis.Redis.from_url(server.url) as client:
            assert client.llen(KEYS.inbox) == 0 and queued_records(client) == 0
    finally:
        server.stop()
