"""The writer's hot script calls (``common/script_calls.py``) against a real redis-server: the
same replies and errors as redis-py's own call, and no reply ever read by the wrong call after
a timeout, a cancellation or a restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.redis_client import UNREACHABLE
from lancequeue.common.script_calls import ScriptCalls
from tests.redis_server import RestartableRedis
from tests.support import free_port, wait_for
from tests.tls_server import tls_binary, write_certificates

ECHO = "return {KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]) + 1}"
FAILS = "return redis.error_reply('ERR refused: ' .. ARGV[1])"
TIMEOUT_S = 0.5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableRedis]:
    made = RestartableRedis(tmp_path / "redis", persistence=False)
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
async def client(server: RestartableRedis) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(server.url) as made:
        yield made


@pytest.fixture
async def calls(client: aioredis.Redis) -> AsyncIterator[ScriptCalls]:
    made = ScriptCalls(client, TIMEOUT_S)
    try:
        yield made
    finally:
        await made.aclose()


async def test_a_call_returns_what_redis_pys_own_call_returns_and_loads_a_script_redis_lacks(
    client: aioredis.Redis, calls: ScriptCalls
) -> None:
    echo = calls.register(ECHO)
    args = ["é", b"\x00\xff", 41]
    expected = await echo(keys=["k"], args=args)  # redis-py's own path (loads the script)
    assert await calls(echo, ["k"], args) == expected == [b"k", "é".encode(), b"\x00\xff", 42]
    await client.script_flush()  # as after a restart: Redis no longer holds it
    assert await calls(echo, ["k"], args) == expected
    assert await client.script_exists(echo.sha) == [True]


async def test_an_error_reply_is_raised_as_redis_pys_and_the_next_call_reads_its_own_reply(
    calls: ScriptCalls,
) -> None:
    fails, echo = calls.register(FAILS), calls.register(ECHO)
    for _ in range(2):  # the first time through NOSCRIPT, then at once
        with pytest.raises(ResponseError, match="refused: 7"):
            await calls(fails, [], [7])
        assert await calls(echo, ["k"], ["a", "b", 1]) == [b"k", b"a", b"b", 2]


async def test_a_frozen_redis_fails_the_call_at_its_deadline_and_its_late_reply_is_read_by_no_later_call(  # noqa: E501
    server: RestartableRedis, calls: ScriptCalls
) -> None:
    echo = calls.register(ECHO)
    assert await calls(echo, ["k"], ["warm", "up", 0])  # loaded, and a connection made
    server.freeze()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError) as raised:
            await calls(echo, ["k"], ["stale", "reply", 0])
        waited = asyncio.get_running_loop().time() - started
    finally:
        server.thaw()
    assert isinstance(raised.value, UNREACHABLE)  # the writer waits it out
    assert TIMEOUT_S <= waited < TIMEOUT_S + 2
    # Redis answers the first call once thawed; the second must not take that answer for its own.
    assert await calls(echo, ["k"], ["fresh", "reply", 1]) == [b"k", b"fresh", b"reply", 2]


async def test_a_call_cancelled_in_flight_leaves_no_reply_for_the_next_one(
    server: RestartableRedis, calls: ScriptCalls
) -> None:
    echo = calls.register(ECHO)
    assert await calls(echo, ["k"], ["warm", "up", 0])
    server.freeze()
    try:
        call = asyncio.ensure_future(calls(echo, ["k"], ["stale", "reply", 0]))
        await asyncio.sleep(0)  # sent, waiting for the reply (Redis is frozen)
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        server.thaw()
    assert await calls(echo, ["k"], ["fresh", "reply", 1]) == [b"k", b"fresh", b"reply", 2]


async def test_a_restarted_redis_fails_the_call_in_flight_as_unreachable_and_serves_the_next(
    server: RestartableRedis, calls: ScriptCalls
) -> None:
    echo = calls.register(ECHO)
    assert await calls(echo, ["k"], ["warm", "up", 0])
    server.restart()  # no persistence: the script cache is gone too
    with pytest.raises(RedisConnectionError) as raised:
        await calls(echo, ["k"], ["lost", "connection", 0])
    assert isinstance(raised.value, UNREACHABLE)
    assert await calls(echo, ["k"], ["after", "restart", 1]) == [b"k", b"after", b"restart", 2]


async def test_calls_in_flight_together_each_get_their_own_reply(calls: ScriptCalls) -> None:
    echo = calls.register(ECHO)
    replies = await asyncio.gather(*(calls(echo, ["k"], [str(n), "x", n]) for n in range(50)))
    assert replies == [[b"k", str(n).encode(), b"x", n + 1] for n in range(50)]


async def test_a_connection_the_server_closed_while_idle_is_made_anew_not_failing_the_call(
    client: aioredis.Redis, calls: ScriptCalls
) -> None:
    echo = calls.register(ECHO)
    assert await calls(echo, ["k"], ["before", "idle", 0])
    await client.config_set("timeout", 1)  # seconds idle before Redis closes a connection
    try:
        ours = {entry["id"] for entry in await client.client_list()}
        # wait until Redis has closed the idle script connection (the client's own is in use)
        deadline = asyncio.get_running_loop().time() + 15
        while not await _closed_one(client, ours):
            assert asyncio.get_running_loop().time() < deadline, "Redis kept the idle connection"
            await asyncio.sleep(0.05)  # polling: Redis announces no close
        assert await calls(echo, ["k"], ["after", "idle", 1]) == [b"k", b"after", b"idle", 2]
    finally:
        await client.config_set("timeout", 0)


async def _closed_one(client: aioredis.Redis, before: set[str]) -> bool:
    now = {entry["id"] for entry in await client.client_list()}
    return bool(before - now)


async def test_the_deadline_is_the_urls_socket_timeout(server: RestartableRedis) -> None:
    async with aioredis.Redis.from_url(f"{server.url}?socket_timeout=0.3") as client:
        calls = ScriptCalls(client)
        echo = calls.register(ECHO)
        try:
            assert await calls(echo, ["k"], ["warm", "up", 0])
            server.freeze()
            try:
                started = asyncio.get_running_loop().time()
                with pytest.raises(RedisTimeoutError):
                    await calls(echo, ["k"], ["late", "reply", 0])
                waited = asyncio.get_running_loop().time() - started
            finally:
                server.thaw()
            assert 0.3 <= waited < 3  # not redis-py's default of 5 s
        finally:
            await calls.aclose()


async def test_an_error_reply_leaves_the_connection_open(
    client: aioredis.Redis, calls: ScriptCalls
) -> None:
    fails, echo = calls.register(FAILS), calls.register(ECHO)
    assert await calls(echo, ["k"], ["warm", "up", 0])
    await client.script_load(FAILS)
    connections = (await client.info("stats"))["total_connections_received"]
    for n in range(3):
        with pytest.raises(ResponseError):
            await calls(fails, [], [n])
        assert await calls(echo, ["k"], ["a", "b", n]) == [b"k", b"a", b"b", n + 1]
    assert (await client.info("stats"))["total_connections_received"] == connections


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A TLS-only redis-server of the test's own (it is frozen), and the URL to reach it."""
    binary, why_not = tls_binary()
    if binary is None:
        pytest.skip(why_not)
    port = free_port()
    config = tmp_path / "redis.conf"
    directives = write_certificates(tmp_path, "127.0.0.1", "localhost")
    config.write_text(
        "\n".join(["port 0", f"tls-port {port}", "bind 127.0.0.1", 'save ""', *directives])
    )
    process = subprocess.Popen(
        [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    try:
        wait_for(lambda: _pongs(url), 30, "the TLS redis-server to answer")
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(15)


def _pongs(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1) as probe:
            return bool(probe.ping())
    except redis.RedisError:
        return False


async def test_closing_a_frozen_tls_redis_s_connections_closes_each_at_once(
    tls_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = tls_redis
    async with aioredis.Redis.from_url(url) as observer, aioredis.Redis.from_url(url) as client:
        calls = ScriptCalls(client)
        echo = calls.register(ECHO)
        await observer.script_load(ECHO)  # no NOSCRIPT: only the calls' own connections run it
        two = await asyncio.gather(
            calls(echo, ["k"], ["a", "b", 0]), calls(echo, ["k"], ["c", "d", 1])
        )
        assert two == [[b"k", b"a", b"b", 1], [b"k", b"c", b"d", 2]]
        assert len(await _script_connections(observer)) == 2
        process.send_signal(signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            await calls.aclose()  # raises nothing, waits for no answer
            assert asyncio.get_running_loop().time() - started < 2
        finally:
            process.send_signal(signal.SIGCONT)
        deadline = asyncio.get_running_loop().time() + 15
        while await _script_connections(observer):  # Redis sees the closes once thawed
            assert asyncio.get_running_loop().time() < deadline, "a connection was left open"
            await asyncio.sleep(0.05)  # polling: Redis announces no close


async def _script_connections(client: aioredis.Redis) -> list[dict[str, str]]:
    return [entry for entry in await client.client_list() if entry["cmd"] == "evalsha"]
