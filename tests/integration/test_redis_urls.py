"""Redis URLs with passwords: any password works once percent-encoded, none is ever shown (not
even in part), and a URL a raw ``#``, ``/`` or ``?`` would cut is refused before anything
connects, so no command is sent without ``AUTH``.

The server here is the tests' own: the default user is off, an ``admin`` account counts the
connections, and the account under test has a password holding every awkward character.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from lancequeue.common import embedded_redis
from lancequeue.common.errors import ConfigError, LancequeueError
from lancequeue.common.redis_client import sync_client
from lancequeue.common.redis_url import parse_redis_url, redact_url
from lancequeue.producer import AsyncProducer, Producer
from lancequeue.writer import Writer
from tests.support import free_port, record, run_cli, table_ids, wait_for

PASSWORD = "p#?@/%41: ü€ x&=+;"
"""Every character a URL gives a meaning to, a space, non-ASCII, and ``%41`` (not an ``A``)."""
WRONG_PASSWORD = "wr#ng?pa@ss/w%rd: é"
ADMIN_PASSWORD = "admin-5e1f"
USER = "lq-user"
TABLE = "docs"


def fragments(secret: str, length: int = 4) -> set[str]:
    """Every substring of ``secret`` of ``length`` characters or more."""
    return {
        secret[start:end]
        for start in range(len(secret))
        for end in range(start + length, len(secret) + 1)
    }


def assert_shows_none_of(text: str, *secrets: str) -> None:
    """No substring of 4 characters or more of any of ``secrets``, as written or
    percent-encoded, is in ``text``."""
    for secret in secrets:
        for form in (secret, quote(secret, safe="")):
            shown = sorted(f for f in fragments(form) if f in text)
            assert not shown, f"{shown[:3]} of a password shown in: {text!r}"


# -- parsing -----------------------------------------------------------------------------------


@given(
    username=st.text(min_size=1, max_size=20),
    password=st.text(min_size=1, max_size=40),
    scheme=st.sampled_from(["redis", "rediss", "redis+cluster", "rediss+cluster"]),
)
def test_any_user_name_and_password_percent_encoded_comes_back_whole(
    username: str, password: str, scheme: str
) -> None:
    url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@127.0.0.1:6379/0"
    parsed = parse_redis_url(url)
    assert parsed.credentials() == {"username": username, "password": password}
    assert parsed.address == f"{scheme.replace('+cluster', '')}://127.0.0.1:6379/0"
    assert parsed.shown == f"{scheme}://{quote(username, safe='')}:***@127.0.0.1:6379/0"
    assert redact_url(url) == parsed.shown


@pytest.mark.parametrize(
    ("url", "address", "shown"),
    [
        ("unix:///run/redis.sock", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("unix:///home/a@b/redis.sock", "unix:///home/a@b/redis.sock", None),
        ("unix://:pw%23x@/run/redis.sock?db=1", "unix:///run/redis.sock?db=1", None),
        ("redis://[::1]:6379", "redis://[::1]:6379", "redis://[::1]:6379"),
        ("redis://h:1/0?password=s3cr3t-pw", None, "redis://h:1/0?password=***"),
        ("rediss://h/?ssl_password=k3y-pw&a=b", None, "rediss://h/?ssl_password=***&a=b"),
        ("redis://s3cr3t-pw@h:1", "redis://h:1", "redis://***@h:1"),  # a password without ':'?
        ("redis://u:a@b@h:1/2", "redis://h:1/2", "redis://u:***@h:1/2"),  # a raw '@' is fine
    ],
)
def test_urls_are_taken_apart_and_shown_without_secrets(
    url: str, address: str | None, shown: str | None
) -> None:
    parsed = parse_redis_url(url)
    if address is not None:
        assert parsed.address == address
    if shown is not None:
        assert parsed.shown == shown
    assert "***" in parsed.shown or not parsed.credentials()


@pytest.mark.parametrize(
    "url",
    [
        # As PROTOCOL.md used to say: all but '#' encoded. urllib took the rest for a fragment:
        # "user:qz%40v" for host and port, "qz%40v" shown in its error.
        "redis://user:qz%40v#k9w-x@127.0.0.1:6379/0",
        "redis://:#qz7-vk9-x@127.0.0.1:6379/0",  # was redis-py's default, localhost:6379
        "redis://user:6380#tq-zv9@127.0.0.1:6379/0",  # was host "user", port 6380
        "redis://user:qz7/vk9-x@127.0.0.1:6379/0",
        "redis://user:qz7?vk9=x@127.0.0.1:6379/0",
        "redis://user:qz@7/vk9-x@127.0.0.1:6379/0",
        "rediss+cluster://user:qz#7-vk9@127.0.0.1:6379",
        "unix://:s3/cr3t-pw@/run/redis.sock",
    ],
)
def test_a_url_a_password_could_be_cut_in_is_refused_showing_no_part_of_it(url: str) -> None:
    password = url.split("://", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]
    with pytest.raises(ConfigError) as refused:
        parse_redis_url(url)
    assert_shows_none_of(str(refused.value), password)
    assert "percent-encode the user name and password" in str(refused.value)
    assert_shows_none_of(redact_url(url), password)
    with pytest.raises(ConfigError) as again:
        sync_client(url)
    assert str(again.value) == str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:s3cr3t-pw@127.0.0.1:63x9/0",
        "redis://:s3cr3t-pw",  # a host forgotten: the password reads as a port
        "redis://user:s3cr3t-pw@127.0.0.1:6379/not-a-db",
        "http://user:s3cr3t-pw@127.0.0.1:6379/0",
        "unix://user:s3cr3t-pw@somehost/run/redis.sock",
    ],
)
def test_other_bad_urls_are_refused_showing_no_part_of_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_redis_url(url)
    assert_shows_none_of(str(refused.value), "s3cr3t-pw")
    assert_shows_none_of(redact_url(url), "s3cr3t-pw")


# -- against a server --------------------------------------------------------------------------


class Server:
    """A redis-server with the default user off, ``admin``, and ``USER`` with ``PASSWORD``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.admin = redis.Redis(
            host="127.0.0.1", port=port, username="admin", password=ADMIN_PASSWORD
        )

    def url(self, password: str = PASSWORD, user: str = USER) -> str:
        return f"redis://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/0"

    def connections(self) -> int:
        """Connections the server accepted so far (``admin``'s one included)."""
        stats: dict[str, Any] = self.admin.info("stats")
        return int(stats["total_connections_received"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("urls")
    port = free_port()
    config = directory / "redis.conf"
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\nuser default off\n'
        f"user admin on >{ADMIN_PASSWORD} ~* &* +@all\n"
    )
    process = subprocess.Popen(
        [embedded_redis.redis_server_binary(), str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    made = Server(port)

    def answers() -> bool:
        try:
            return bool(made.admin.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 15, f"redis-server on port {port}")
        # Set here rather than in the file: its arguments go as they are, spaces and all.
        made.admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}", "~*", "&*", "+@all"
        )
        yield made
    finally:
        made.admin.close()
        process.terminate()
        process.wait(15)


@pytest.fixture
def fresh(server: Server) -> Server:
    server.admin.flushall()
    server.admin.acl_log_reset()
    return server


async def test_a_writer_producers_and_the_cli_authenticate_with_a_password_of_every_character(
    fresh: Server, tmp_path: Path
) -> None:
    url = fresh.url()
    db_uri = str(tmp_path / "db")
    writer = Writer(table=TABLE, redis_url=url, db_uri=db_uri, coalesce_ms=10)
    task = asyncio.create_task(writer.run())
    try:

        def send() -> None:
            with Producer(TABLE, redis_url=url, timeout_ms=20_000) as producer:
                producer.write_many([record(i) for i in range(10)])

        await asyncio.to_thread(send)
        async with AsyncProducer(TABLE, redis_url=url, timeout_ms=20_000) as producer:
            await producer.write_many([record(i) for i in range(10, 20)])
        status = await asyncio.to_thread(run_cli, "status", "--table", TABLE, "--redis", url)
        assert status.returncode == 0, status.stderr
        assert_shows_none_of(status.stdout + status.stderr, PASSWORD)
    finally:
        await asyncio.wait_for(writer.stop(), 30)
        await task
    assert table_ids(db_uri) == list(range(20))
    assert fresh.admin.acl_log() == []


async def test_a_wrong_password_is_refused_and_no_part_of_it_is_shown(
    fresh: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # redis-py's own logging too
    url = fresh.url(WRONG_PASSWORD)
    shown: list[str] = []
    with Producer(TABLE, redis_url=url, timeout_ms=5_000) as producer:
        with pytest.raises(LancequeueError) as refused:
            producer.write(record(1))
        shown.append(str(refused.value))
    assert "invalid username-password pair" in shown[0]
    writer = Writer(table=TABLE, redis_url=url, db_uri=str(tmp_path / "db"))
    with pytest.raises(ConfigError) as writer_refused:
        await asyncio.wait_for(writer.run(), 30)
    shown.append(str(writer_refused.value))
    done = await asyncio.to_thread(run_cli, "-vv", "status", "--table", TABLE, "--redis", url)
    assert done.returncode == 1 and "invalid username-password pair" in done.stderr
    shown += [done.stdout, done.stderr, caplog.text]
    shown += [caplog.handler.format(entry) for entry in caplog.records]  # tracebacks included
    for text in shown:
        assert_shows_none_of(text, WRONG_PASSWORD, PASSWORD)


@pytest.mark.parametrize(
    "client",
    ["producer", "async producer", "writer", "status", "produce"],
)
async def test_a_url_a_raw_hash_would_cut_never_reaches_the_server(
    server: Server, client: str, tmp_path: Path
) -> None:
    # Read by urllib, "127.0.0.1:PORT" comes before the '#': the server itself, with no AUTH.
    secret = f"{server.port}#the-rest-of-it"
    url = f"redis://127.0.0.1:{secret}@127.0.0.1:{server.port}/0"
    before = server.connections()
    if client == "producer":
        with pytest.raises(ConfigError) as refused:
            Producer(TABLE, redis_url=url).close()
        message = str(refused.value)
    elif client == "async producer":
        with pytest.raises(ConfigError) as refused:
            async with AsyncProducer(TABLE, redis_url=url):
                pass
        message = str(refused.value)
    elif client == "writer":
        with pytest.raises(ConfigError) as refused:
            await asyncio.wait_for(Writer(table=TABLE, redis_url=url, db_uri="unused").run(), 30)
        message = str(refused.value)
    else:
        source = tmp_path / "records.jsonl"
        source.write_text('{"id": 1}\n')
        args = [str(source)] if client == "produce" else []
        done = await asyncio.to_thread(run_cli, client, "--table", TABLE, "--redis", url, *args)
        assert done.returncode == 1
        message = done.stdout + done.stderr
        assert "Traceback" not in message
    assert "raw '#'" in message
    assert_shows_none_of(message, "#the-rest-of-it")  # its first part is the port, shown
    assert secret[:6] not in message
    assert server.connections() == before, "a URL with a password reached the server"
