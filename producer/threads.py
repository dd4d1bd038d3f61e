"""The sync producer's runner: the core's three loops on threads of their own, and the calls
they make (Redis on a thread of its own, bounded by the records' deadline; waits on conditions
and events)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from lancequeue.common.protocol import ABANDON_SCRIPT, ENQUEUE_SCRIPT
from lancequeue.common.redis_client import REDIS_FAILURES, SyncRedis, sync_client
from lancequeue.common.replies import encode_results
from lancequeue.producer.calls import REPLY_BLOCK_S, Call, NotStarted, Op, Steps, resume
from lancequeue.producer.commands import redis_commands
from lancequeue.producer.core import ProducerCore
from lancequeue.producer.outbox import ABANDON_ATTEMPT_S, REPLY_INFLIGHT_TTL_MS

logger = logging.getLogger(__name__)


class Threads:
    """Runs a core's sender, listener and abandoner on daemon threads."""

    def __init__(
        self, core: ProducerCore[Any], url: str, cluster: bool, redis_timeout_s: float
    ) -> None:
        self._core = core
        self._redis = _client(url, cluster, redis_timeout_s)
        try:
            self._replies = _client(url, cluster, redis_timeout_s + REPLY_BLOCK_S)
            self._abandoner = _client(url, cluster, ABANDON_ATTEMPT_S)
        except BaseException:
            self._redis.close()
            raise
        self._enqueue_script = self._redis.register_script(ENQUEUE_SCRIPT)
        self._abandon_script = self._abandoner.register_script(ABANDON_SCRIPT)
        self._pubsub: redis.client.PubSub | None = None
        # Where the sender's Redis calls run, one at a time, so that it can stop waiting for
        # one at its records' deadline (see _by_deadline).
        self._calls = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"lancequeue-send-{core.keys.table}"
        )
        self.changed = threading.Condition()
        """Buffer changes (records in, room made) and closing; an RLock, as the buffer's
        callbacks notify it from put() while an enqueue waiting for room holds it."""
        core.buffer.on_room = core.buffer.on_buffered = self.notify
        self._due = threading.Event()
        core.on_due = self._due.set
        self._stopping = threading.Event()  # ends the listener's pauses
        self._ops: dict[Op, Callable[..., Any]] = {
            Op.WAIT_BUFFERED: self._wait_buffered,
            Op.CONNECT: self._connect,
            Op.SUBSCRIBE: self._subscribe,
            Op.AWAIT_FLUSH: self._await_flush,
            Op.UNSUBSCRIBE: self._unsubscribe,
            Op.PAUSE: time.sleep,  # bounded by the core, by close()'s deadline too
            Op.NEXT_REPLY: self._next_reply,
            Op.LISTEN_PAUSE: self._stopping.wait,
            Op.WAIT_DUE: self._wait_due,
            **redis_commands(
                core,
                lambda: self._redis,
                lambda: self._replies,
                lambda: self._enqueue_script,
                lambda: self._abandon_script,
            ),
        }
        self.sender = self._start(
            core.sender, "sender", lambda: core.closing and not len(core.buffer)
        )
        self.listener = self._start(core.listener, "replies", lambda: core.stopping)
        self.expirer = self._start(core.abandoner, "expiry", lambda: core.stopping)

    def ours(self) -> bool:
        """Whether the calling thread is one of these (a done-callback runs on them)."""
        return threading.current_thread() in (self.sender, self.listener, self.expirer)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def stop(self) -> None:
        """Have the listener and the abandoner end (the core is ``stopping``): wake them, and
        wait for them unless called from one of them."""
        self._stopping.set()
        self._due.set()
        reachable = self.wake_listener()
        if threading.current_thread() not in (self.listener, self.expirer):
            self.listener.join()
            self.expirer.join()
        if reachable:  # else the in-flight list expires by itself
            self.settle_inflight_at_close()

    def shut(self) -> None:
        """Release the call thread and the clients."""
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._redis.close()
        self._replies.close()
        self._abandoner.close()

    def _start(
        self, steps: Callable[[], Steps], name: str, done: Callable[[], bool]
    ) -> threading.Thread:
        thread = threading.Thread(
            target=self._run_until,
            args=(steps, done),
            name=f"lancequeue-{name}-{self._core.keys.table}",
            daemon=True,
        )
        thread.start()
        return thread

    def _run_until(self, steps: Callable[[], Steps], done: Callable[[], bool]) -> None:
        """Run a loop of the core; should an exception escape it (a done-callback raising
        SystemExit), start it again: records must not be left unanswered."""
        while True:
            try:
                self._run(steps())
                return
            except BaseException:
                logger.exception("%s: restarting", threading.current_thread().name)
                if done():
                    return

    def _run(self, steps: Steps) -> None:
        call = resume(steps, None, None)
        while call is not None:
            error: BaseException | None = None
            try:
                result = self._perform(call)
            except BaseException as exc:  # the loop decides what a failed call means
                result, error = None, exc
            call = resume(steps, result, error)

    def _perform(self, call: Call) -> Any:
        op = self._ops[call.op]
        if call.timeout_s is None or call.op is Op.ABANDON:  # the abandoner's socket timeout
            return op(*call.args)
        return self._by_deadline(call.timeout_s, op, *call.args)

    def _by_deadline(self, timeout_s: float, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the producer's Redis thread, waiting no longer than the call's
        timeout (its records' deadline; for the enqueue script, a little past it): a hung Redis
        must not hold them past it. Calls run one at a time, in order,
        so one left running (its outcome unknown, like a lost connection's) goes before the
        next. Raises ``NotStarted`` if the call had not even started (nothing was sent), a
        Redis ``TimeoutError`` if it had."""
        try:
            running = self._calls.submit(call, *args)
        except RuntimeError:
            if self._core.stopping:  # close() is over: nothing more goes out
                raise NotStarted("the producer is closed") from None
            return call(*args)  # the interpreter is exiting: an atexit close() sends the rest
        try:
            return running.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            if running.cancel():
                raise NotStarted("Redis is still busy with this producer's call before") from None
            raise RedisTimeoutError(
                "no answer from Redis in time for the records; the call goes on without them"
            ) from None

    # -- the calls ---------------------------------------------------------------------------

    def _wait_buffered(self, wait_s: float | None) -> None:
        core = self._core
        with self.changed:
            if wait_s is not None:  # a linger: until it ends, or a chunk's worth is in
                self.changed.wait(wait_s)
            else:
                self.changed.wait_for(lambda: len(core.buffer) or core.closing)

    def _connect(self) -> None:
        """Have the pool's next connection connected (a stale one is replaced), so that the
        enqueue script fails only on a connection lost while it ran."""
        client = self._redis
        if isinstance(client, redis.RedisCluster):
            node = client.get_node_from_key(self._core.keys.stream)  # type: ignore[no-untyped-call]
            client = client.get_redis_connection(node)
        pool = client.connection_pool
        pool.release(pool.get_connection())

    def _subscribe(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
        self._pubsub.subscribe(self._core.keys.flushed_channel)

    def _await_flush(self, wait_s: float) -> bool:
        assert self._pubsub is not None
        return self._pubsub.get_message(timeout=wait_s) is not None

    def _unsubscribe(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                pubsub.close()

    def _next_reply(self) -> bytes | None:
        """Move the next reply message to the in-flight list (waiting up to a second) and
        return it; the same round trip gives the in-flight list its expiry."""
        outbox = self._core.outbox
        with self._replies.pipeline(transaction=False) as pipe:
            pipe.blmove(outbox.reply_key, outbox.inflight_key, REPLY_BLOCK_S)
            pipe.pexpire(outbox.inflight_key, REPLY_INFLIGHT_TTL_MS)
            message, _ = pipe.execute()
        return message  # type: ignore[no-any-return]

    def _wait_due(self, wait_s: float | None) -> None:
        self._due.wait(wait_s)
        self._due.clear()  # after the wait: a record numbered meanwhile is seen next turn

    def wake_listener(self) -> bool:
        """End the listener's blocking pop now rather than at its timeout: push an empty reply
        (no results) to our own reply list, which nobody else reads. False if Redis could not
        be reached (the listener ends at its timeout instead)."""
        reply_key = self._core.outbox.reply_key
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(reply_key, encode_results([]))
                pipe.pexpire(reply_key, 60_000)
                pipe.execute()
        except REDIS_FAILURES:
            return False
        return True

    def settle_inflight_at_close(self) -> None:
        """Settle and delete what the in-flight list still holds (the listener has stopped)."""
        key = self._core.outbox.inflight_key
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                leftovers, _ = pipe.execute()
        except REDIS_FAILURES:
            return  # the list expires by itself
        self._core.settle_leftovers(leftovers)


def _client(url: str, cluster: bool, socket_timeout_s: float) -> SyncRedis:
    """A client that never repeats a command by itself: the producer decides what to send
    again after a lost connection."""
    return sync_client(
        url,
        cluster,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )
