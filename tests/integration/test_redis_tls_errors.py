"""A TLS setup that cannot work (an untrusted CA, the wrong host name, a missing CA file) is a
configuration error, not an outage: the writer exits at once with one line naming the
certificate problem, producers and ``lancequeue status`` fail at once with it. A TLS server
that is down is still waited for."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from lancequeue.common.errors import ConfigError
from lancequeue.producer import AsyncProducer, Producer
from tests.support import CLI, cli_env, free_port, run_cli, wait_for, writer_alive
from tests.tls_server import tls_binary, write_certificates

PASSWORD = "tls-pw#5?q"
EXITS_WITHIN_S = 60
"""How long the writer may take to give up (it takes well under a second)."""


@dataclass
class TlsServer:
    """A TLS-only redis-server whose certificate is issued for 127.0.0.1 alone."""

    port: int
    ca_file: Path

    def url(self, host: str = "127.0.0.1", scheme: str = "rediss", ca: str | None = "") -> str:
        """A URL with a password; ``ca`` "" names the right CA file, None none."""
        query = "" if ca is None else f"?ssl_ca_certs={quote(ca or str(self.ca_file))}"
        return f"{scheme}://lq:{quote(PASSWORD, safe='')}@{host}:{self.port}/0{query}"

    def shown(self, **url_options: str | None) -> str:
        """``url(**url_options)`` as lancequeue shows it: the password masked."""
        return self.url(**url_options).replace(quote(PASSWORD, safe=""), "***")  # type: ignore[arg-type]

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username="lq",
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
        )


def start_server(
    binary: str, directory: Path, port: int, tls: list[str]
) -> subprocess.Popen[bytes]:
    """A TLS-only redis-server on ``port`` serving the certificates of ``tls`` (see
    ``write_certificates``), answering once this returns."""
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                'save ""',
                "appendonly no",
                "user default off",
                f"user lq on >{PASSWORD} ~* &* +@all",
                *tls,
                "",
            ]
        )
    )
    process = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL)
    with TlsServer(port, directory / "ca.pem").client() as client:

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 15, f"the TLS redis-server on port {port}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(15)


@pytest.fixture(scope="module")
def binary() -> str:
    found, why_not = tls_binary()
    if found is None:
        pytest.skip(why_not)
    return found


@pytest.fixture(scope="module")
def server(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    port = free_port()
    process = start_server(binary, directory, port, write_certificates(directory, "127.0.0.1"))
    try:
        yield TlsServer(port, directory / "ca.pem")
    finally:
        stop(process)


def run_writer_until_it_exits(url: str, tmp_path: Path) -> tuple[int, str, float]:
    """``lancequeue writer`` for ``url``: its exit code, output and how long it ran (killed
    and failed if it still runs after ``EXITS_WITHIN_S``)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [*CLI, "writer", "--table", "docs", "--redis", url, "--db", str(tmp_path / "db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    try:
        output, _ = process.communicate(timeout=EXITS_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the writer still ran after {EXITS_WITHIN_S}s: {output[-2000:]}")
    return process.returncode, output, time.monotonic() - started


CASES = {
    "untrusted CA": (
        {"ca": None},
        "Redis TLS: certificate verify failed: self-signed certificate in certificate chain",
    ),
    "wrong host name": (
        {"host": "localhost"},
        "Redis TLS: certificate verify failed: Hostname mismatch, certificate is not valid for "
        "'localhost'",
    ),
    "missing CA file": (
        {"ca": "/nonexistent/ca.pem"},
        "Redis TLS: cannot load ssl_ca_certs /nonexistent/ca.pem: No such file or directory",
    ),
    "untrusted CA, cluster URL": (
        {"ca": None, "scheme": "rediss+cluster"},
        "Redis TLS: certificate verify failed: self-signed certificate in certificate chain",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_writer_exits_at_once_with_one_line_naming_the_certificate_problem(
    server: TlsServer, case: str, tmp_path: Path
) -> None:
    url_options, problem = CASES[case]
    url = server.url(**url_options)  # type: ignore[arg-type]
    code, output, _ = run_writer_until_it_exits(url, tmp_path)
    assert code == 1, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert " ERROR lancequeue.cli.writer: " in lines[0]
    assert problem in lines[0]
    assert lines[0].endswith(f"({server.shown(**url_options)})")
    assert PASSWORD not in output and quote(PASSWORD, safe="") not in output


async def test_producers_and_status_fail_at_once_naming_the_certificate_problem(
    server: TlsServer,
) -> None:
    url = server.url(ca=None)
    problem = "Redis TLS: certificate verify failed: self-signed certificate in certificate chain"
    with pytest.raises(ConfigError, match=problem):
        Producer("docs", redis_url=url).close()
    with pytest.raises(ConfigError, match=problem):
        async with AsyncProducer("docs", redis_url=url):
            pass
    done = await asyncio.to_thread(run_cli, "status", "--table", "docs", "--redis", url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: {problem} ({server.shown(ca=None)})"]


def test_a_writer_started_while_the_tls_server_is_down_waits_for_it(
    binary: str, tmp_path: Path
) -> None:
    port = free_port()
    directory = tmp_path / "redis"
    directory.mkdir()
    tls = write_certificates(directory, "127.0.0.1")
    ca_file = directory / "ca.pem"
    log_path = tmp_path / "writer.log"
    with open(log_path, "wb") as log:
        writer = subprocess.Popen(
            [*CLI, "writer", "--table", "docs", "--db", str(tmp_path / "db"), "--redis",
             TlsServer(port, ca_file).url()],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )  # fmt: skip
    server: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "retrying with backoff" in log_path.read_text(), 30, "the writer to wait")
        server = start_server(binary, directory, port, tls)
        with TlsServer(port, ca_file).client() as client:
            wait_for(lambda: writer_alive(client), 60, "the writer to take its lease")
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(30) == 0, log_path.read_text()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(30)
        if server is not None:
            stop(server)
    assert "Traceback" not in log_path.read_text()
