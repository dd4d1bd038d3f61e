"""Redis URLs, parsed here rather than by ``urllib``/redis-py, so that a password with any
character in it works and no part of one is ever shown.

``scheme://[user[:password]@]host[:port][/db][?query]``, where ``scheme`` is ``redis``,
``rediss`` (TLS), ``redis+cluster`` or ``rediss+cluster``; or ``unix://[user[:password]@]/path``.
The user name and password are percent-decoded and go to redis-py as ``username=`` and
``password=``: redis-py parses only the rest of the URL, which holds no credentials, so nothing
can cut a password short or send a command without ``AUTH``.

Percent-encode the user name and password (``urllib.parse.quote(password, safe="")``). A URL
that cannot be read without guessing is refused with :class:`ConfigError` rather than used: a
raw ``#`` anywhere (a Redis URL has no fragment: ``urllib`` would cut the URL there), an ``@``
after the host (a raw ``/`` or ``?`` in a password ends the host part early; write ``@`` in a
query value ``%40``; ``unix:///a@b/redis.sock``, with no user info, is fine), a port that is not
a number, a path other than the database number. Error messages show the URL as
:func:`redact_url` does: never a character of a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from lancequeue.common.errors import ConfigError

SCHEMES = {
    "redis": ("redis", None),
    "rediss": ("rediss", None),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
    "unix": ("unix", False),
}
"""Each scheme lancequeue accepts: the scheme redis-py is given, and whether the URL names a
cluster (None: ask the server)."""

SECRET_QUERY_PARAMETERS = ("password", "ssl_password")
"""Query parameters redis-py takes whose values are secrets, masked like the password."""

MASK = "***"
_SECRET_VALUE = re.compile(r"(?i)(^|[?&])((?:" + "|".join(SECRET_QUERY_PARAMETERS) + r")=)[^&#]*")
_DB_PATH = re.compile(r"/?[0-9]*")
_PORT = re.compile(r"[0-9]+")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[^\[\]:]*")
_HOW_TO_ENCODE = (
    "percent-encode the user name and password, e.g. urllib.parse.quote(password, safe='')"
)


@dataclass(frozen=True)
class RedisUrl:
    """A Redis URL taken apart: the credentials, and the address redis-py is given."""

    address: str
    """The URL without user name and password (``+cluster`` schemes as ``redis``/``rediss``):
    what redis-py's ``from_url`` parses."""
    cluster: bool | None
    """Whether the URL names a Redis Cluster by its scheme (None: ask the server)."""
    username: str | None
    password: str | None = field(repr=False)
    shown: str
    """The URL as it may be shown: the password (and any secret query value) masked."""
    query: dict[str, str]
    """The query parameters, percent-decoded (the first value of each)."""

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (``rediss``)."""
        return self.address.startswith("rediss://")

    def credentials(self) -> dict[str, str]:
        """``username``/``password`` keyword arguments for redis-py (only those given)."""
        given = {"username": self.username, "password": self.password}
        return {name: value for name, value in given.items() if value}


def parse_redis_url(url: str) -> RedisUrl:
    """Take ``url`` apart (see the module's docstring); raises :class:`ConfigError`, showing
    the URL as :func:`redact_url` does, if it is not a Redis URL or cannot be read unambiguously.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _refused(url, "a Redis URL starts with " + ", ".join(f"{s}://" for s in SCHEMES))
    scheme = scheme.lower()
    if "#" in rest:
        raise _refused(url, f"it holds a raw '#' (write it %23): {_HOW_TO_ENCODE}")
    authority, tail = _cut(rest, "/?")
    userinfo, at, hostport = authority.rpartition("@")
    if "@" in tail and (authority or scheme != "unix"):  # unix:///a@b/sock has no user info
        raise _refused(
            url,
            f"it holds an '@' after the host (a raw '/' or '?' in a password ends the host part "
            f"early): {_HOW_TO_ENCODE}, and write '@' in a query value as %40",
        )
    host, port = _split_host(hostport)
    if host is None or (port and not (_PORT.fullmatch(port) and int(port) <= 65535)):
        raise _refused(url, "the host and port are not host:port with a port number")
    path, _, query_text = tail.partition("?")
    if scheme == "unix":
        if hostport:
            raise _refused(url, "a unix:// URL names a socket path, no host")
        if not path.strip("/"):
            raise _refused(url, "a unix:// URL needs the path of the socket")
    elif not _DB_PATH.fullmatch(path):
        raise _refused(url, "the path of a Redis URL is the database number")
    username, password = _credentials(url, userinfo) if at else (None, None)
    redis_scheme, cluster = SCHEMES[scheme]
    return RedisUrl(
        address=f"{redis_scheme}://{hostport}{tail}",
        cluster=cluster,
        username=username,
        password=password,
        shown=_shown(scheme, userinfo if at else None, hostport + tail),
        query={name: values[0] for name, values in parse_qs(query_text).items() if values},
    )


def redact_url(url: str) -> str:
    """``url`` as it may be shown in a message or a log: the password replaced by ``***``
    (a user name without a password too: it may be a password written without its ``:``),
    and so are secret query values. A URL :func:`parse_redis_url` refuses is shown as
    ``scheme://***@`` and what follows its last ``@`` (a password never does), or
    ``scheme://***`` if it has no ``@``."""
    try:
        return parse_redis_url(url).shown
    except ConfigError:
        return _shown_unparsed(url)


def _cut(text: str, stops: str) -> tuple[str, str]:
    """``text`` split before the first of ``stops`` (all of it first if there is none)."""
    ends = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    end = min(ends) if ends else len(text)
    return text[:end], text[end:]


def _split_host(hostport: str) -> tuple[str | None, str]:
    """``host`` and ``port`` (``""`` if none) of ``host[:port]`` (``[v6]`` hosts in brackets);
    host None if ``hostport`` is not of that form."""
    found = _HOST.match(hostport)
    assert found is not None  # the pattern matches the empty string
    host = found.group()
    rest = hostport[found.end() :]
    if rest and not rest.startswith(":"):
        return None, ""
    return host, rest[1:]


def _credentials(url: str, userinfo: str) -> tuple[str | None, str | None]:
    """The percent-decoded user name and password of ``user[:password]``; the password is
    everything after the first ``:`` (a ``:`` in a user name must be encoded)."""
    user, colon, secret = userinfo.partition(":")
    try:
        username = unquote(user, errors="strict")
        password = unquote(secret, errors="strict") if colon else None
    except UnicodeDecodeError:
        raise _refused(
            url, f"the user name or password is not UTF-8 once percent-decoded: {_HOW_TO_ENCODE}"
        ) from None
    return username or None, password or None


def _shown(scheme: str, userinfo: str | None, hostport_and_tail: str) -> str:
    """A parsed URL as it may be shown."""
    if userinfo is None:
        credentials = ""
    elif ":" in userinfo and userinfo.partition(":")[0]:
        credentials = f"{userinfo.partition(':')[0]}:{MASK}@"
    else:
        credentials = f"{MASK}@"
    return f"{scheme}://{credentials}{_mask_query(hostport_and_tail)}"


def _shown_unparsed(url: str) -> str:
    """A URL that could not be parsed, as it may be shown: nothing before its last ``@``."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or len(scheme) > 20 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return MASK  # not even a scheme: show nothing of it
    _, at, after = rest.rpartition("@")
    return f"{scheme}://{MASK}" + (f"@{_mask_query(after)}" if at else "")


def _mask_query(text: str) -> str:
    """``text`` with the value of each secret query parameter masked."""
    query_start = text.find("?")
    if query_start < 0:
        return text
    return text[:query_start] + _SECRET_VALUE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text[query_start:]
    )


def _refused(url: str, why: str) -> ConfigError:
    return ConfigError(f"Redis URL {_shown_unparsed(url)}: {why}")
