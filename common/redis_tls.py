"""TLS problems with Redis that waiting cannot fix.

A lost or refused connection is an outage: processes wait it out. A certificate that does not
verify (unknown CA, wrong host name, expired), a server refusing the client's certificate, or
a CA, certificate or key file that cannot be loaded is a configuration error: it is reported
at once, in one line naming the problem, as :class:`RedisTlsError`.
"""

from __future__ import annotations

import re
import ssl

from lancequeue.common.errors import ConfigError
from lancequeue.common.redis_url import RedisUrl

_SSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)\.?$")


class RedisTlsError(ConfigError):
    """TLS with Redis failed for a reason waiting cannot fix; the message names it, and the
    URL (password masked) when it is known."""

    def __init__(self, problem: str, shown_url: str | None = None) -> None:
        super().__init__(f"Redis TLS: {problem}" + (f" ({shown_url})" if shown_url else ""))
        self.problem = problem
        self.shown_url = shown_url

    def at(self, shown_url: str) -> RedisTlsError:
        """The same error naming ``shown_url`` (itself if it names a URL already)."""
        if self.shown_url is not None:
            return self
        located = RedisTlsError(self.problem, shown_url)
        located.__cause__ = self.__cause__
        return located


def check_tls_files(url: RedisUrl) -> None:
    """Load the CA, certificate and key files a ``rediss`` URL names (``ssl_ca_certs``,
    ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``) as redis-py will when it connects;
    raises :class:`RedisTlsError` naming the file that cannot be loaded and why."""
    if not url.tls:
        return
    query = url.query
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cafile, capath = query.get("ssl_ca_certs"), query.get("ssl_ca_path")
    if cafile or capath:
        try:
            context.load_verify_locations(cafile=cafile, capath=capath)
        except OSError as exc:  # ssl.SSLError included
            named = f"ssl_ca_certs {cafile}" if cafile else f"ssl_ca_path {capath}"
            raise RedisTlsError(f"cannot load {named}: {_why(exc)}", url.shown) from exc
    certfile, keyfile = query.get("ssl_certfile"), query.get("ssl_keyfile")
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile, password=query.get("ssl_password"))
        except OSError as exc:
            named = f"ssl_certfile {certfile}" + (f" / ssl_keyfile {keyfile}" if keyfile else "")
            raise RedisTlsError(f"cannot load {named}: {_why(exc)}", url.shown) from exc


def tls_problem(exc: BaseException) -> str | None:
    """What ``exc`` (or an exception it was raised from) says is wrong with TLS that waiting
    cannot fix, or None: the server's certificate did not verify, or the server refused the
    client's certificate. A TLS connection cut short is not such a problem (an outage)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            why = current.verify_message or _why(current)
            return f"certificate verify failed: {str(why).rstrip('.')}"
        reason = getattr(current, "reason", None) if isinstance(current, ssl.SSLError) else None
        if isinstance(reason, str) and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return f"the server refused the client certificate: {_why(current)}"
        current = current.__cause__ or current.__context__
    return None


def tls_error(exc: BaseException, shown_url: str | None = None) -> RedisTlsError | None:
    """A :class:`RedisTlsError` for ``exc`` if it is a TLS problem waiting cannot fix
    (:func:`tls_problem`), else None."""
    if isinstance(exc, RedisTlsError):
        return exc.at(shown_url) if shown_url else exc
    problem = tls_problem(exc)
    if problem is None:
        return None
    error = RedisTlsError(problem, shown_url)
    error.__cause__ = exc
    return error


def _why(exc: BaseException) -> str:
    """An OSError's or SSLError's explanation without OpenSSL's source location."""
    if isinstance(exc, ssl.SSLError):
        text = _SSL_NOISE.sub("", str(exc.strerror or exc)).strip()
        return "not a PEM certificate or key" if text == "PEM lib" else text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
